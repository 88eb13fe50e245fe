"""512-bit vectors in chosen Numba kernels, whatever LLVM's tuning for the host prefers.

LLVM tunes Intel's AVX-512 CPUs to prefer 256-bit vectors, and Numba can change that only for the
whole process (``NUMBA_CPU_FEATURES``), which would also recompile the Numba peer and every other
Numba function: the peer ran 1.4x slower so.  LLVM reads the preference per function too (the
function attributes "prefer-vector-width" and "min-legal-vector-width"), so a kernel that calls
``wide_vectors()`` gets 512-bit vectors and nothing else changes.  On a CPU without AVX-512 the
attributes change nothing; they never change an integer result, and move float sums only within
the reordering ``FASTMATH`` already allows.  What each kernel gains is in the README ("Speed").
"""

from __future__ import annotations

from numba import types
from numba.extending import intrinsic

ATTRIBUTES = ('"prefer-vector-width"="512"', '"min-legal-vector-width"="512"')


@intrinsic
def wide_vectors(typingctx):
    """Mark the function that calls it (after Numba's own inlining) for 512-bit vectors, and as
    never inlined: LLVM would otherwise inline it into a caller without the attributes."""
    def codegen(context, builder, signature, args):
        attributes = builder.function.attributes
        for attribute in ATTRIBUTES:
            # llvmlite's add() accepts only its list of enum attributes; a string attribute goes
            # into the set as the text the function's definition prints (LLVM IR's "key"="value")
            set.add(attributes, attribute)
        attributes.add("noinline")
        return context.get_dummy_value()

    return types.none(), codegen
