"""Numba functions as typed XLA FFI handlers on the CPU (``api_version=1``), with no C compiler.

A handler is a Numba ``@cfunc(int64(int64))``: it receives the address of XLA's
``XLA_FFI_CallFrame`` and reads it by the offsets of ``xla/ffi/api/c_api.h`` (FFI API major
version 0, whose structs only grow at their end; each carries its size).  It answers XLA's
metadata query (a call-frame extension of type 1) with its API version, works only at the
execute stage, and returns a null error.  A frame whose sizes or buffer counts differ from
what the handler reads gets an XLA error instead of a result, and before any handler is used
``probe.layout_error`` runs a probe handler on the installed jax, so a jax whose layout differs
makes the engine fall back to its XLA path with that message.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import carray, cfunc, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

# Byte offsets in XLA_FFI_CallFrame (c_api.h), read as int64 words: struct_size 0, extension 8,
# api 16, stage 32; XLA_FFI_Args at 40 (struct_size, extension, size 56, types 64, args 72) and
# XLA_FFI_Rets at 80 (size 96, types 104, rets 112); XLA_FFI_Attrs from 120 to 168.
FRAME_WORDS = 15
FRAME_SIZE = 168  # XLA_FFI_CallFrame_STRUCT_SIZE (up to and including attrs)
ARGS_SIZE = 40  # XLA_FFI_Args_STRUCT_SIZE, XLA_FFI_Rets_STRUCT_SIZE
BUFFER_SIZE = 48  # XLA_FFI_Buffer_STRUCT_SIZE: data at 24, rank 32, dims 40
BUFFER = 1  # XLA_FFI_ArgType_BUFFER, XLA_FFI_RetType_BUFFER
EXECUTE = 3  # XLA_FFI_ExecutionStage_EXECUTE
METADATA = 1  # XLA_FFI_Extension_Metadata
API_MAJOR, API_MINOR = 0, 1  # the FFI API version the handlers declare
ERROR_CREATE = 48  # byte offset of XLA_FFI_Error_Create in XLA_FFI_Api
FAILED_PRECONDITION = 9  # XLA_FFI_Error_Code
LAYOUT_MESSAGE = ("l1jax fused CPU kernel: XLA's FFI call frame differs from the layout it reads; "
                  'set kernels = "xla" in the config\'s [train] section')


@intrinsic
def _void_pointer(typingctx, address):
    """int64 address -> void*, for ``numba.carray``."""
    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)
    return types.voidptr(types.int64), codegen


@intrinsic
def _layout_error(typingctx, api):
    """An XLA_FFI_Error (as int64) made by the API at address ``api`` with ``LAYOUT_MESSAGE``."""
    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        create_args = cgutils.alloca_once(builder, i64, size=4)
        message = context.insert_const_string(builder.module, LAYOUT_MESSAGE)
        for k, v in enumerate((i64(28), i64(0), builder.ptrtoint(message, i64), i64(FAILED_PRECONDITION))):
            builder.store(v, builder.gep(create_args, [ir.IntType(32)(k)]))
        fn_type = ir.FunctionType(i64, [cgutils.voidptr_t])
        slot = builder.inttoptr(builder.add(args[0], i64(ERROR_CREATE)), fn_type.as_pointer().as_pointer())
        return builder.call(builder.load(slot), [builder.bitcast(create_args, cgutils.voidptr_t)])
    return types.int64(types.int64), codegen


@njit(inline="always")
def words(address, n):
    """``n`` int64 words at ``address``."""
    return carray(_void_pointer(address), (n,), np.int64)


@njit(inline="always")
def halves(address, n):
    """``n`` int32 words at ``address``."""
    return carray(_void_pointer(address), (n,), np.int32)


@njit(inline="always")
def frame_words(address):
    """The call frame's first words (see the offsets above)."""
    return words(address, FRAME_WORDS)


@njit(cache=True)
def answer_metadata(frame):
    """True for a call that is not an execution: XLA's metadata query (answered here with the
    handler's API version and no traits) or another stage."""
    ext = frame[1]
    if ext != 0:
        if halves(ext, 4)[2] == METADATA:
            meta = words(ext, 4)[3]
            v = words(meta, 4)
            v[1] = 24  # api_version.struct_size
            v[2] = 0  # api_version.extension_start
            h = halves(meta, 9)
            h[6] = API_MAJOR
            h[7] = API_MINOR
            h[8] = 0  # traits
        return True
    return (frame[4] & 0xFFFFFFFF) != EXECUTE


@njit(cache=True)
def _buffers_ok(types_address, buffers_address, n):
    kinds, buffers = halves(types_address, n), words(buffers_address, n)
    for i in range(n):
        if kinds[i] != BUFFER or words(buffers[i], 1)[0] < BUFFER_SIZE:
            return False
    return True


@njit(cache=True)
def check_frame(frame, n_args, n_rets):
    """0 if the frame has the sizes and buffer counts the handler reads, else an XLA error."""
    ok = (frame[0] >= FRAME_SIZE and frame[5] >= ARGS_SIZE and frame[10] >= ARGS_SIZE
          and frame[7] == n_args and frame[12] == n_rets
          and _buffers_ok(frame[8], frame[9], n_args) and _buffers_ok(frame[13], frame[14], n_rets))
    return 0 if ok else _layout_error(frame[2])


PROCEED = -1  # ``enter``'s answer when the handler is to do its work (never a pointer or 0)


@njit(cache=True)
def enter(address, n_args, n_rets):
    """The call frame at ``address`` and what the handler returns before any work: 0 for a
    metadata query or another stage, an XLA error if the frame is not the one it reads
    (``check_frame``), else PROCEED."""
    frame = frame_words(address)
    if answer_metadata(frame):
        return frame, 0
    err = check_frame(frame, n_args, n_rets)
    return frame, (PROCEED if err == 0 else err)


@njit(inline="always")
def _buffer(frame, which, i):
    return words(words(frame[which], i + 1)[i], 6)


@njit(inline="always")
def arg(frame, i, shape, dtype):
    """Argument buffer ``i`` as a C-ordered array of ``dtype`` values, ``shape`` an int or a tuple
    (a shaped view, never ``reshape``: its error path alone took seconds of Numba compiling)."""
    return carray(_void_pointer(_buffer(frame, 9, i)[3]), shape, dtype)


@njit(inline="always")
def ret(frame, i, shape, dtype):
    """Result buffer ``i`` as a C-ordered array of ``dtype`` values (``shape`` as for ``arg``)."""
    return carray(_void_pointer(_buffer(frame, 14, i)[3]), shape, dtype)


@njit(inline="always")
def arg_dim(frame, i, k):
    """Dimension ``k`` of argument buffer ``i``."""
    b = _buffer(frame, 9, i)
    return words(b[5], b[4])[k]


@njit(inline="always")
def ret_dim(frame, i, k):
    """Dimension ``k`` of result buffer ``i``."""
    b = _buffer(frame, 14, i)
    return words(b[5], b[4])[k]


@cfunc(types.int64(types.int64), cache=True)
def probe(address):
    """The probe handler: result = argument xor 0xA5A5A5A5 (uint32 [n]), if the frame reads as
    expected (``probe.layout_error`` checks it)."""
    frame, status = enter(address, np.int64(1), np.int64(1))  # typed as the handlers call it: one compile
    if status != PROCEED:
        return status
    n = arg_dim(frame, 0, 0)
    x, y = arg(frame, 0, n, np.uint32), ret(frame, 0, n, np.uint32)
    for i in range(n):
        y[i] = x[i] ^ np.uint32(0xA5A5A5A5)
    return 0
