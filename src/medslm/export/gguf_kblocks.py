"""The GGUF block layouts of Q5_0, Q4_K and Q6_K, packed from medslm's integers and grid (the
types of llama.cpp's Q4_K_M beyond Q8_0, see :mod:`medslm.methods.kquant`). Each function takes
row-major codes and the per-block numbers and returns (rows, bytes per row) uint8, the layout
ggml's ``block_q5_0`` / ``block_q4_K`` / ``block_q6_K`` structs have; ``gguf``'s dequantizer reads
them back in the export's check. ``gguf`` itself quantizes none of these from given integers (it
has no quantizer for K-quants at all), hence the packing here.
"""

from __future__ import annotations

import numpy as np


def _f16_bytes(x: np.ndarray) -> np.ndarray:
    """(..., n) fp16 values as (..., n, 2) bytes."""
    x = np.ascontiguousarray(x, dtype=np.float16)
    return x.view(np.uint8).reshape(*x.shape, 2)


def q5_0_blocks(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Q5_0, 32 weights a block: fp16 d; 4 bytes holding bit 4 of each code (+16), weight i at bit i
    of a little-endian uint32; 16 bytes of low nibbles (weights 0..15 low, 16..31 high):
    ``w = d * (n - 16)``."""
    rows, cols = codes.shape
    n = (codes.astype(np.int16) + 16).astype(np.uint8).reshape(rows, cols // 32, 32)
    qh = np.packbits((n >> 4) & 1, axis=-1, bitorder="little")  # (rows, nb, 4)
    qs = (n[..., :16] & 0x0F) | ((n[..., 16:] & 0x0F) << 4)
    return np.concatenate([_f16_bytes(scales).reshape(rows, -1, 2), qh, qs], -1).reshape(rows, -1)


def q4_k_blocks(codes: np.ndarray, d: np.ndarray, dmin: np.ndarray, sc: np.ndarray, mn: np.ndarray) -> np.ndarray:
    """Q4_K, 256 weights a super-block: fp16 d, fp16 dmin, 12 bytes of eight 6-bit scales and mins,
    128 bytes of nibbles (each 64 weights: sub-block 2j in the low nibbles, 2j+1 in the high):
    ``w = d * sc_j * q - dmin * m_j``."""
    rows, cols = codes.shape
    nb = cols // 256
    q = codes.astype(np.uint8).reshape(rows, nb, 4, 2, 32)
    qs = (q[:, :, :, 0] | (q[:, :, :, 1] << 4)).reshape(rows, nb, 128)
    sc, mn = sc.reshape(rows, nb, 8).astype(np.uint8), mn.reshape(rows, nb, 8).astype(np.uint8)
    # bytes 0..3: scales 0..3 and the top two bits of scales 4..7; 4..7: the same for the mins;
    # 8..11: the low four bits of scales 4..7 (low nibble) and mins 4..7 (high nibble)
    packed = np.concatenate([sc[..., :4] | ((sc[..., 4:] >> 4) << 6), mn[..., :4] | ((mn[..., 4:] >> 4) << 6),
                             (sc[..., 4:] & 0x0F) | ((mn[..., 4:] & 0x0F) << 4)], -1)
    head = np.concatenate([_f16_bytes(d), _f16_bytes(dmin)], -1)  # (rows, nb, 4)
    return np.concatenate([head, packed, qs], -1).reshape(rows, -1)


def q6_k_blocks(codes: np.ndarray, d: np.ndarray, sc: np.ndarray) -> np.ndarray:
    """Q6_K, 256 weights a super-block: 128 bytes of low nibbles, 64 bytes of the high two bits, 16
    int8 scales (one per 16 weights), fp16 d: ``w = d * sc_j * (n - 32)``. In each half of 128
    weights, weight j and j + 64 share a low-nibble byte, and weights j, j+32, j+64, j+96 a high-bits
    byte (two bits each, in that order)."""
    rows, cols = codes.shape
    nb = cols // 256
    n = (codes.astype(np.int16) + 32).astype(np.uint8).reshape(rows, nb, 2, 128)
    lo, hi = n & 0x0F, n >> 4
    ql = (lo[..., :64] | (lo[..., 64:] << 4)).reshape(rows, nb, 128)
    h = hi.reshape(rows, nb, 2, 4, 32)
    qh = (h[..., 0, :] | (h[..., 1, :] << 2) | (h[..., 2, :] << 4) | (h[..., 3, :] << 6)).reshape(rows, nb, 64)
    scales = sc.reshape(rows, nb, 16).astype(np.int8).view(np.uint8)
    return np.concatenate([ql, qh, scales, _f16_bytes(d)], -1).reshape(rows, -1)
