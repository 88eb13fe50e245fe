"""The seed article's NumPy code, kept verbatim (its comments included) so that l1jax can
reproduce exactly what it prints.  Its "gradient" is -(2/n) X^T (pred - y), and
``w - lr * dw`` then *ascends* the squared error: the printed losses grow."""

import numpy as np


def calculate_l1_loss(predictions, targets):
    return np.mean(np.abs(predictions - targets))

def linear_model(X, weights, bias):
  return np.dot(X, weights) + bias

def gradient_descent_step(X, y, predictions, weights, bias, learning_rate):
    n = len(y)
    dw = - (2/n) * np.dot(X.T, (predictions-y)) # Simplified L1 derivative (approximated)
    db = - (2/n) * np.sum(predictions-y)          # Simplified L1 derivative (approximated)

    updated_weights = weights - learning_rate * dw
    updated_bias = bias - learning_rate * db

    return updated_weights, updated_bias


def train_model(X, y, num_epochs, learning_rate):
    weights = np.random.randn(X.shape[1])
    bias = np.random.randn(1)
    loss_history = []
    for _ in range(num_epochs):
      predictions = linear_model(X, weights, bias)
      loss = calculate_l1_loss(predictions,y)
      loss_history.append(loss)

      weights, bias = gradient_descent_step(X,y,predictions,weights, bias, learning_rate)

    return loss_history, weights, bias


def article_script(seed: int) -> np.ndarray:
    """The article's three examples as written (after ``np.random.seed(seed)``): the loss
    histories [3, 100] of sizes 100, 1000, 10000; it prints their last entries."""
    np.random.seed(seed)
    histories = []
    for n in (100, 1000, 10000):
        X = np.random.rand(n, 2)
        y = 2 * X[:, 0] + 3 * X[:, 1] + np.random.randn(n)
        loss, _, _ = train_model(X, y, num_epochs=100, learning_rate=0.01)
        histories.append(loss)
    return np.asarray(histories, float)
