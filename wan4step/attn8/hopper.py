"""attn8's attention kernels for Hopper (sm90), in Gluon (Triton's lower-level dialect): the same codes
and arithmetic as kernels._attn8_kernel, scheduled so the tensor cores and the softmax overlap.

Triton's `tl.dot` waits for each warpgroup MMA right after issuing it, so a program's Q·Kᵀ,
softmax and P·V run one after another and only the second program on the SM fills the gaps.
Gluon exposes the asynchronous MMA, TMA loads and mbarriers, so one warpgroup does what
FlashAttention-3 calls intra-warpgroup pipelining: while the tensor cores compute P(j)·V(j), the
warps exponentiate S(j+1). V is stored in key order (kernels KEY_ORDER) so P reaches the P·V MMA
without moving between threads, and P·V is added into the accumulator by the MMA.

Two forms: _attn8_sm90_kernel (one warpgroup of 64 rows per program, two programs per SM, each
issuing its own TMA loads STAGES blocks ahead) and _attn8_sm90_ws_kernel, what sm90 runs
(attn8.CONFIGS): warp-specialized, a producer warp streams K and V through one ring shared by two
consumer warpgroups of 64 rows, so the consumers carry no load code and no CTA-wide barrier, and
each K/V tile is loaded once for 128 rows. H200, kernel alone, same run
(docs/bench/attention_h200_s7.log): 25.96 against 26.89 ms per 480p call, 137.9 against 142.7 ms at
720p, same accuracy (cos 0.99990 / rel. L2 1.42 % at 480p against float32 SDPA).

ONES (attn8.CONFIGS on sm90): the softmax row sums come from the tensor cores, as P·1 with an 8-column
MMA next to P·V, instead of 64 dependent FADDs per block and warp, the longest chain in the consumer's
loop (docs/bench/attention_h200_s8.log: 23.35–23.46 against 26.08–26.16 ms at 480p, 120.7 against
135.1 ms at 720p, kernel alone, same run). The normalizer is then the sum of P's e4m3 codes, the same
numbers P·V multiplies. The tile of ones comes from global memory by TMA like K and V: written from
registers into the swizzled shared tile inside a partition, the MMA read wrong values (negative sums).

Measured and not kept (same logs; docs/BENCHMARKS.md): the consumers taking turns to issue their MMAs
(FlashAttention-3's ping-pong, through mbarriers) 27.4 ms; the MMAs issued right after the softmax so
P is converted to e4m3 once from fp32 and never crosses the loop 28.8–29.2 ms; e4m3 codes carried
across the loop (255 registers and spills in ptxas); row sums by a P·ones MMA (wrong sums) and a
lazy, program-wide rescale (slower); SageAttention2's fresh FP32 product per block (no accuracy gain);
and (docs/bench/attention_h200_s8.log, patches in docs/bench/patches/) tree reductions 28.7, the next
Q·Kᵀ issued right after the softmax 28.4–28.6 (ptxas serializes wgmma left pending across the loop),
key blocks two at a time 32–39 (registers), three consumers with 64-key blocks 28.3.
Per 64×128 block a warp issues 531 instructions (66 exponentials) over 1,070 cycles of ptxas's own
stalls; under ncu tensor, MUFU and issue each sit at 43–46 %: the tile time is the two consumer warps'
dependency chains, not a unit's throughput. attn8.attn8 checks it
against the Triton kernel once per GPU and falls back to that kernel, with one warning, if it fails
or differs.
"""

from __future__ import annotations

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma, warpgroup_mma, warpgroup_mma_wait
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

BLOCK_N = 128  # keys per block = D: S and O share one MMA layout

P_LOG2 = gl.constexpr(8.8)  # reference.P_LOG2: P's largest code 2^8.8 ~ 445 < e4m3's 448
MAGIC = gl.constexpr(12582912.0)  # 1.5 * 2**23
MAGIC_BITS = gl.constexpr(0x4B400000)  # its bit pattern


@gluon.jit
def _softmax(s, cc, m_i, l_i, start, Lk, p_layout: gl.constexpr, col_layout: gl.constexpr,
             BLOCK_N: gl.constexpr, MASK: gl.constexpr, ROWSUM: gl.constexpr = True):
    """S (int32 codes' products) -> P as fp16 in the P·V operand layout, alpha, l, m (base 2)."""
    if MASK:
        valid = gl.expand_dims(start + gl.arange(0, BLOCK_N, layout=col_layout) < Lk, 0)
        s = gl.where(valid, s, -(1 << 30))
    m_new = gl.maximum(m_i, gl.max(s, axis=1).to(gl.float32) * cc)
    bias = MAGIC * cc + (m_new - P_LOG2)
    x = (s + MAGIC_BITS).to(gl.float32, bitcast=True) * gl.expand_dims(cc, 1) - gl.expand_dims(bias, 1)
    if MASK:
        x = gl.where(valid, x, -float("inf"))
    p = gl.exp2(x)
    alpha = gl.exp2(m_i - m_new)
    if ROWSUM:  # else the tensor cores sum P's codes (_rows' ONES)
        l_i = l_i * alpha + gl.sum(p, axis=1)
    # fp16 between the softmax and its use: two keys per register across the loop (e4m3 codes made
    # here would take a register each: 255 registers and spills); e4m3 codes are made at the MMA (_e4m3)
    return _as_operand(p, p_layout, BLOCK_N).to(gl.float16), alpha, l_i, m_new


@gluon.jit
def _as_operand(p, p_layout: gl.constexpr, BLOCK_N: gl.constexpr):
    """P in the accumulator layout -> the P·V A-operand layout without moving data between threads.

    A thread holds accumulator columns 2t, 2t+1, 8+2t, 9+2t (+16) of each 32 keys (t = lane % 4) and
    feeds operand positions 4t..4t+3 (+16): P's keys are taken in that order (key_order), and V is
    stored in the same order by the quantize kernel, so P·V is unchanged."""
    BM: gl.constexpr = p.shape[0]
    p = gl.reshape(p, [BM, BLOCK_N // 32, 2, 2, 4, 2])  # key = 32 chunk + 16 h + 8 g + 2 t + e
    p = gl.permute(p, [0, 1, 2, 4, 3, 5])  # position = 32 chunk + 16 h + 4 t + 2 g + e
    return gl.convert_layout(gl.reshape(p, [BM, BLOCK_N]), p_layout)


@gluon.jit
def _e4m3(p16):
    """fp16 P -> e4m3 codes, four keys of a row per register (cvt of f16 pairs; exact rounding: fp16
    holds every value e4m3 can distinguish, so this rounds as fp32 -> e4m3 would but on ties)."""
    codes = gl.inline_asm_elementwise(
        "{ .reg .b16 lo, hi;\n cvt.rn.satfinite.e4m3x2.f16x2 lo, $1;\n cvt.rn.satfinite.e4m3x2.f16x2 hi, $2;\n"
        " mov.b32 $0, {lo, hi}; }", "=r,r,r", [p16], dtype=gl.int8, is_pure=True, pack=4)
    return codes.to(gl.float8e4nv, bitcast=True)


@gluon.jit
def _row_sums_mma(codes, ones_s, l_acc, alpha, mma8: gl.constexpr, p8_layout: gl.constexpr):
    """Issue l = l * alpha + P·1 on the tensor cores: an 8-column MMA beside P·V on the same codes, each
    column of l the row sum (ones_s: the [8, BLOCK_N] tile of ones, K-major like V)."""
    l_acc = l_acc * gl.expand_dims(gl.convert_layout(alpha, gl.SliceLayout(1, mma8)), 1)
    return warpgroup_mma(gl.convert_layout(codes, p8_layout), ones_s.permute((1, 0)), l_acc, use_acc=True,
                         is_async=True)


@gluon.jit
def _load_kv(k_desc, v_desc, k_smem, v_smem, k_bars, v_bars, blk, k_row0, v_row0, n_blocks,
             STAGES: gl.constexpr, BLOCK_N: gl.constexpr, HALF_KV: gl.constexpr):
    """TMA loads of key block `blk` (when it exists) into ring slot blk % STAGES (HALF_KV: the probe's
    half tiles, the descriptors' blocks being half as tall)."""
    ok = blk < n_blocks
    st = blk % STAGES
    k_dst = k_smem.index(st)
    v_dst = v_smem.index(st)
    if HALF_KV:
        k_dst = k_dst.slice(0, k_desc.block_type.shape[0])
        v_dst = v_dst.slice(0, v_desc.block_type.shape[0])
    mbarrier.expect(k_bars.index(st), k_desc.block_type.nbytes, pred=ok)
    tma.async_copy_global_to_shared(k_desc, [k_row0 + blk * BLOCK_N, 0], k_bars.index(st), k_dst, pred=ok)
    mbarrier.expect(v_bars.index(st), v_desc.block_type.nbytes, pred=ok)
    tma.async_copy_global_to_shared(v_desc, [v_row0, blk * BLOCK_N], v_bars.index(st), v_dst, pred=ok)


@gluon.jit
def _rows(q_s, q_bar, k_smem, v_smem, k_ready, v_ready, empty, k_desc, v_desc, k_row0, v_row0, QS, KS, VM, VS, Out,
          q_pad0, row0, Lq, Lk, n_blocks, qk_scale, b, h, bh, sob, soh, sol, ones_s, ones_bar, BLOCK_M: gl.constexpr,
          BLOCK_N: gl.constexpr, D: gl.constexpr, STAGES: gl.constexpr, HALF_KV: gl.constexpr, WS: gl.constexpr,
          ONES: gl.constexpr, num_warps: gl.constexpr):
    """One warpgroup's rows row0 ... of one (batch, head), start to output: the next block's Q·Kᵀ and this
    block's P·V in flight while the softmax runs, P carried as fp16 to the next iteration's MMA.
    WS: K and V arrive on one barrier per slot from the producer warp, and a slot is freed by arriving on
    `empty` (one of the two consumers' arrivals); otherwise this warpgroup refills the slot itself."""
    gl.static_assert(BLOCK_N == D, "S and O share one MMA layout (rows of alpha need no conversion)")
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                  instr_shape=[16, BLOCK_N, 32])
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma, k_width=4)
    rows: gl.constexpr = gl.SliceLayout(1, mma)
    cols: gl.constexpr = gl.SliceLayout(0, mma)
    offs_m = row0 + gl.arange(0, BLOCK_M, layout=rows)
    c = gl.load(QS + q_pad0 + offs_m) * qk_scale  # per row: q scale * softmax scale * log2(e)
    ks_ptr = KS + bh * n_blocks
    zero = gl.zeros([BLOCK_M, BLOCK_N], gl.int32, mma)
    acc = gl.zeros([BLOCK_M, D], gl.float32, mma)
    m_i = gl.full([BLOCK_M], -float("inf"), gl.float32, rows)
    l_i = gl.zeros([BLOCK_M], gl.float32, rows)
    tail = Lk % BLOCK_N != 0  # the last block holds pad keys (codes 0): masked
    mma8: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                   instr_shape=[16, 8, 32])
    # the A operand as the N = 8 MMA sees it (the same registers as p_layout's: A does not depend on N)
    p8_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma8, k_width=4)
    l_acc = gl.zeros([BLOCK_M, 8], gl.float32, mma8)
    if ONES:  # row sums as P·1 on the tensor cores: a tile of ones that the producer brought by TMA
        mbarrier.wait(ones_bar, 0)

    # block 0: S(0), softmax
    mbarrier.wait(q_bar, 0)
    mbarrier.wait(k_ready.index(0), 0)
    s = warpgroup_mma(q_s, k_smem.index(0).permute((1, 0)), zero, use_acc=False, is_async=True)
    s = warpgroup_mma_wait(0, deps=(s,))
    if tail and n_blocks == 1:
        p16, alpha, l_i, m_i = _softmax(s, c * gl.load(ks_ptr), m_i, l_i, 0, Lk, p_layout, cols, BLOCK_N, True,
                                        not ONES)
    else:
        p16, alpha, l_i, m_i = _softmax(s, c * gl.load(ks_ptr), m_i, l_i, 0, Lk, p_layout, cols, BLOCK_N, False,
                                        not ONES)

    for j in range(0, n_blocks - 1):
        nxt = j + 1
        st_n = nxt % STAGES
        mbarrier.wait(k_ready.index(st_n), (nxt // STAGES) & 1)
        s_tok = warpgroup_mma(q_s, k_smem.index(st_n).permute((1, 0)), zero, use_acc=False, is_async=True)
        st = j % STAGES
        if not WS:
            mbarrier.wait(v_ready.index(st), (j // STAGES) & 1)
        acc = acc * gl.expand_dims(alpha, 1)
        codes = _e4m3(p16)
        o_tok = warpgroup_mma(codes, v_smem.index(st).permute((1, 0)), acc, use_acc=True, is_async=True)
        if ONES:
            l_tok = _row_sums_mma(codes, ones_s, l_acc, alpha, mma8, p8_layout)
            s = warpgroup_mma_wait(2, deps=(s_tok,))
        else:
            s = warpgroup_mma_wait(1, deps=(s_tok,))
        cc = c * gl.load(ks_ptr + nxt)
        if tail and nxt == n_blocks - 1:
            p16, alpha, l_i, m_i = _softmax(s, cc, m_i, l_i, nxt * BLOCK_N, Lk, p_layout, cols, BLOCK_N, True,
                                            not ONES)
        else:
            p16, alpha, l_i, m_i = _softmax(s, cc, m_i, l_i, nxt * BLOCK_N, Lk, p_layout, cols, BLOCK_N, False,
                                            not ONES)
        if ONES:
            acc, l_acc = warpgroup_mma_wait(0, deps=(o_tok, l_tok))
        else:
            acc = warpgroup_mma_wait(0, deps=(o_tok,))
        # slot st's K was read by S(j) and its V by O(j)
        if WS:
            mbarrier.arrive(empty.index(st))
        else:
            _load_kv(k_desc, v_desc, k_smem, v_smem, k_ready, v_ready, j + STAGES, k_row0, v_row0, n_blocks, STAGES,
                     BLOCK_N, HALF_KV)

    last = n_blocks - 1
    st = last % STAGES
    if not WS:
        mbarrier.wait(v_ready.index(st), (last // STAGES) & 1)
    acc = acc * gl.expand_dims(alpha, 1)
    codes = _e4m3(p16)
    o_tok = warpgroup_mma(codes, v_smem.index(st).permute((1, 0)), acc, use_acc=True, is_async=True)
    if ONES:
        l_tok = _row_sums_mma(codes, ones_s, l_acc, alpha, mma8, p8_layout)
        acc, l_acc = warpgroup_mma_wait(0, deps=(o_tok, l_tok))
        l_i = gl.convert_layout(gl.max(l_acc, axis=1), rows)  # every column holds the row sum
    else:
        acc = warpgroup_mma_wait(0, deps=(o_tok,))
    if WS:
        mbarrier.arrive(empty.index(st))

    offs_d = gl.arange(0, D, layout=cols)
    vs = gl.load(VS + bh * D + offs_d)
    vm = gl.load(VM + bh * D + offs_d)
    out = acc * (gl.expand_dims(vs, 0) / gl.expand_dims(l_i, 1)) + gl.expand_dims(vm, 0)
    o_ptrs = Out + b * sob + h * soh + gl.expand_dims(offs_m.to(gl.int64) * sol, 1) + gl.expand_dims(offs_d, 0)
    gl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=gl.expand_dims(offs_m < Lq, 1))


@gluon.jit
def _attn8_sm90_kernel(q_desc, k_desc, v_desc, QS, KS, VM, VS, Out, Lq, Lk, Lq_pad, Lk_pad, H, qk_scale,
                       sob, soh, sol, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, D: gl.constexpr,
                       STAGES: gl.constexpr, HALF_KV: gl.constexpr, num_warps: gl.constexpr):
    """One warpgroup (or num_warps // 4 of them on BLOCK_M rows) per program, loads issued in its loop."""
    pid_m = gl.program_id(0)
    bh = gl.program_id(1)
    q_smem = gl.allocate_shared_memory(gl.int8, [BLOCK_M, D], q_desc.layout)
    k_smem = gl.allocate_shared_memory(gl.int8, [STAGES, BLOCK_N, D], gl.NVMMASharedLayout.get_default_for(
        [BLOCK_N, D], gl.int8))
    v_smem = gl.allocate_shared_memory(gl.float8e4nv, [STAGES, D, BLOCK_N], gl.NVMMASharedLayout.get_default_for(
        [D, BLOCK_N], gl.float8e4nv))
    q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    k_bars = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    v_bars = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    mbarrier.init(q_bar, count=1)
    for i in gl.static_range(STAGES):
        mbarrier.init(k_bars.index(i), count=1)
        mbarrier.init(v_bars.index(i), count=1)
    n_blocks = Lk_pad // BLOCK_N
    k_row0 = bh * Lk_pad
    v_row0 = bh * D
    mbarrier.expect(q_bar, q_desc.block_type.nbytes)
    tma.async_copy_global_to_shared(q_desc, [bh * Lq_pad + pid_m * BLOCK_M, 0], q_bar, q_smem)
    for i in gl.static_range(STAGES):
        _load_kv(k_desc, v_desc, k_smem, v_smem, k_bars, v_bars, i, k_row0, v_row0, n_blocks, STAGES, BLOCK_N, HALF_KV)
    _rows(q_smem, q_bar, k_smem, v_smem, k_bars, v_bars, k_bars, k_desc, v_desc, k_row0, v_row0, QS, KS, VM, VS, Out,
          bh * Lq_pad, pid_m * BLOCK_M, Lq, Lk, n_blocks, qk_scale, bh // H, bh % H, bh, sob, soh, sol, q_smem, q_bar,
          BLOCK_M,
          BLOCK_N, D, STAGES, HALF_KV, False, False, num_warps)
    mbarrier.invalidate(q_bar)
    for i in gl.static_range(STAGES):
        mbarrier.invalidate(k_bars.index(i))
        mbarrier.invalidate(v_bars.index(i))


@gluon.jit
def _ws_producer(q_desc, k_desc, v_desc, o_desc, q_smem, k_smem, v_smem, ones_smem, q_bars, ones_bar, ready, empty,
                 q_row0, k_row0, v_row0, n_blocks, STAGES: gl.constexpr, BLOCK_N: gl.constexpr, ONES: gl.constexpr):
    """One warp: both consumers' Q tiles, then K and V blocks through the ring as slots free up."""
    if ONES:
        mbarrier.expect(ones_bar, o_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(o_desc, [0, 0], ones_bar, ones_smem)
    for c in gl.static_range(2):
        mbarrier.expect(q_bars.index(c), q_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(q_desc, [q_row0 + c * q_desc.block_type.shape[0], 0], q_bars.index(c),
                                        q_smem.index(c))
    for j in range(n_blocks):
        st = j % STAGES
        mbarrier.wait(empty.index(st), ((j // STAGES) & 1) ^ 1)  # fresh barriers pass phase 1
        bar = ready.index(st)
        mbarrier.expect(bar, k_desc.block_type.nbytes + v_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(k_desc, [k_row0 + j * BLOCK_N, 0], bar, k_smem.index(st))
        tma.async_copy_global_to_shared(v_desc, [v_row0, j * BLOCK_N], bar, v_smem.index(st))


@gluon.jit
def _ws_consumer(C: gl.constexpr, q_smem, k_smem, v_smem, q_bars, ready, empty, k_desc, v_desc, QS, KS, VM, VS, Out,
                 q_pad0, row0, Lq, Lk, n_blocks, qk_scale, b, h, bh, sob, soh, sol, ones_smem, ones_bar,
                 BLOCK_M: gl.constexpr,
                 BLOCK_N: gl.constexpr, D: gl.constexpr, STAGES: gl.constexpr, ONES: gl.constexpr):
    _rows(q_smem.index(C), q_bars.index(C), k_smem, v_smem, ready, ready, empty, k_desc, v_desc, 0, 0, QS, KS, VM, VS,
          Out, q_pad0, row0 + C * BLOCK_M, Lq, Lk, n_blocks, qk_scale, b, h, bh, sob, soh, sol, ones_smem, ones_bar,
          BLOCK_M, BLOCK_N, D, STAGES, False, True, ONES, 4)


@gluon.jit
def _attn8_sm90_ws_kernel(q_desc, k_desc, v_desc, o_desc, QS, KS, VM, VS, Out, Lq, Lk, Lq_pad, Lk_pad, H, qk_scale,
                          sob, soh, sol, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, D: gl.constexpr,
                          STAGES: gl.constexpr, CONSUMER_REGS: gl.constexpr, ONES: gl.constexpr,
                          num_warps: gl.constexpr):
    """Warp-specialized: a producer warp streams K and V through a ring shared by two consumer warpgroups
    (BLOCK_M rows each, 2 * BLOCK_M per program); one program per SM."""
    pid_m = gl.program_id(0)
    bh = gl.program_id(1)
    b = bh // H
    h = bh % H
    q_smem = gl.allocate_shared_memory(gl.int8, [2, BLOCK_M, D], q_desc.layout)
    k_smem = gl.allocate_shared_memory(gl.int8, [STAGES, BLOCK_N, D], gl.NVMMASharedLayout.get_default_for(
        [BLOCK_N, D], gl.int8))
    v_smem = gl.allocate_shared_memory(gl.float8e4nv, [STAGES, D, BLOCK_N], gl.NVMMASharedLayout.get_default_for(
        [D, BLOCK_N], gl.float8e4nv))
    ones_smem = gl.allocate_shared_memory(gl.float8e4nv, [8, BLOCK_N], o_desc.layout)
    ones_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    q_bars = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    mbarrier.init(ones_bar, count=1)
    for i in gl.static_range(2):
        mbarrier.init(q_bars.index(i), count=1)
    for i in gl.static_range(STAGES):
        mbarrier.init(ready.index(i), count=1)
        mbarrier.init(empty.index(i), count=2)
    n_blocks = Lk_pad // BLOCK_N
    row0 = pid_m * (2 * BLOCK_M)
    q_pad0 = bh * Lq_pad
    gl.warp_specialize([
        (_ws_consumer, (0, q_smem, k_smem, v_smem, q_bars, ready, empty, k_desc, v_desc, QS, KS, VM, VS, Out, q_pad0,
                        row0, Lq, Lk, n_blocks, qk_scale, b, h, bh, sob, soh, sol, ones_smem, ones_bar, BLOCK_M, BLOCK_N, D,
                        STAGES, ONES)),
        (_ws_consumer, (1, q_smem, k_smem, v_smem, q_bars, ready, empty, k_desc, v_desc, QS, KS, VM, VS, Out, q_pad0,
                        row0, Lq, Lk, n_blocks, qk_scale, b, h, bh, sob, soh, sol, ones_smem, ones_bar, BLOCK_M, BLOCK_N, D,
                        STAGES, ONES)),
        (_ws_producer, (q_desc, k_desc, v_desc, o_desc, q_smem, k_smem, v_smem, ones_smem, q_bars, ones_bar, ready,
                        empty, q_pad0 + row0, bh * Lk_pad, bh * D, n_blocks, STAGES, BLOCK_N, ONES)),
    ], [4, 1], [CONSUMER_REGS, 24])


_ONES: dict[torch.device, torch.Tensor] = {}


def _ones(device: torch.device) -> torch.Tensor:
    """The [8, BLOCK_N] e4m3 ones the kernel's P·1 row sums read (one per device, made once)."""
    if device not in _ONES:
        _ONES[device] = torch.ones(8, BLOCK_N, device=device).to(torch.float8_e4m3fn)
    return _ONES[device]


def _desc(t: torch.Tensor, block: list[int], dtype) -> TensorDescriptor:
    return TensorDescriptor(t, list(t.shape), list(t.stride()), block, gl.NVMMASharedLayout.get_default_for(block, dtype))


def attention_codes(q8, qs, k8, ks, vt, vm, vs, B: int, H: int, Lq: int, Lk: int, dtype: torch.dtype,
                    block_m: int = 64, stages: int = 3, num_warps: int = 4, half_kv_probe: bool = False,
                    ws: bool = False, consumer_regs: int = 240, ones: bool = False) -> torch.Tensor:
    """The codes of attn8.quantize (V stored with key_order=True, key blocks of 128) -> [B, H, Lq, D].
    half_kv_probe: load only half of each K and V tile (a timing probe: the output is garbage).
    ws: the warp-specialized kernel (a producer warp, two consumer warpgroups of block_m rows sharing
    the K/V ring, one program per SM)."""
    BH, lq, D = q8.shape
    lk = k8.shape[1]
    rows = block_m * (2 if ws else 1)
    if D != BLOCK_N or lk % BLOCK_N or lq % rows:
        raise ValueError(f"hopper attention needs D = {BLOCK_N} and padded codes (D {D}, keys {lk}, queries {lq})")
    out = torch.empty(B, Lq, H, D, device=q8.device, dtype=dtype)
    scale = D**-0.5 * 1.4426950408889634
    if ones and not ws:
        raise ValueError("P·1 row sums (ones) are a form of the warp-specialized kernel (ws)")
    if ws:
        if half_kv_probe:
            raise ValueError("half_kv_probe is a probe of the one-warpgroup kernel")
        # 12 warps (the producer's group counted whole) share 64K registers: 168 each at launch, then
        # 240 for each consumer and 24 for the producer
        _attn8_sm90_ws_kernel[(lq // rows, BH)](
            _desc(q8.view(BH * lq, D), [block_m, D], gl.int8), _desc(k8.view(BH * lk, D), [BLOCK_N, D], gl.int8),
            _desc(vt.view(BH * D, lk), [D, BLOCK_N], gl.float8e4nv), _desc(_ones(q8.device), [8, BLOCK_N], gl.float8e4nv),
            qs, ks, vm, vs, out, Lq, Lk, lq, lk, H, scale,
            out.stride(0), out.stride(2), out.stride(1), BLOCK_M=block_m, BLOCK_N=BLOCK_N, D=D, STAGES=stages,
            CONSUMER_REGS=consumer_regs, ONES=ones, num_warps=4, maxnreg=168)
        return out.transpose(1, 2)
    _attn8_sm90_kernel[(triton.cdiv(Lq, block_m), BH)](
        _desc(q8.view(BH * lq, D), [block_m, D], gl.int8),
        _desc(k8.view(BH * lk, D), [BLOCK_N // (1 + half_kv_probe), D], gl.int8),
        _desc(vt.view(BH * D, lk), [D // (1 + half_kv_probe), BLOCK_N], gl.float8e4nv), qs, ks, vm, vs, out, Lq, Lk,
        lq, lk, H, scale, out.stride(0), out.stride(2), out.stride(1), BLOCK_M=block_m, BLOCK_N=BLOCK_N, D=D,
        STAGES=stages, HALF_KV=half_kv_probe, num_warps=num_warps)
    return out.transpose(1, 2)
