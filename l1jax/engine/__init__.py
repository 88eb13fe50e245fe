"""The engine: configs, data, plans, the compiled training function, sweeps, results and their store."""
