"""The Triton kernels of :mod:`pgmunfold.infer.fused` (imported only when they are used: Triton
is optional). Triton resolves a kernel's helpers among the module's globals, hence a module of
their own. Documentation of what they compute: :mod:`pgmunfold.infer.fused`."""

# mypy: disable-error-code="no-untyped-def"

import triton
import triton.language as tl


@triton.jit
def _reduce(x, axis: tl.constexpr, MAX: tl.constexpr):
    top = tl.max(x, axis=axis)
    if MAX:
        out = top
    else:
        out = top + tl.log2(tl.sum(tl.exp2(x - tl.expand_dims(top, axis)), axis=axis))
    return out


@triton.jit
def _normalise(x, states, NEG: tl.constexpr):
    # x: (KP, BLOCK); states: (KP,) which rows are real states
    xm = tl.where(states[:, None], x, float("-inf"))
    top = tl.max(xm, axis=0)
    lse = top + tl.log2(tl.sum(tl.exp2(xm - top[None, :]), axis=0))
    return tl.maximum(x - lse[None, :], NEG)


@triton.jit
def _block(n_items, BLOCK: tl.constexpr):
    # this program's batch row, its block of items, and which of them exist
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    return tl.program_id(1).to(tl.int64), idx, idx < n_items


@triton.jit
def _add_slots(acc, mrow, slots_ptr, v, vm, m2, n_var, n_deg, skip):
    # acc + the messages in every slot column of variables v, except column `skip` (per item;
    # -1: none), (KP, BLOCK); the padding slots hold the zero column
    for d in range(n_deg):
        col = tl.load(slots_ptr + d * n_var + v, mask=vm, other=0)
        acc += tl.load(mrow + col[None, :], mask=m2 & (col != skip)[None, :], other=0.0)
    return acc


@triton.jit
def _gather_sum(
    msg_ptr,
    field_ptr,
    slots_ptr,
    n_col,
    n_var,
    n_deg,
    K: tl.constexpr,
    KP: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # this program's variables: field plus every incoming message column, (KP, BLOCK); also
    # returns the offsets of the (B, K, V) rows, the mask and which rows are real states
    b, v, vm = _block(n_var, BLOCK)
    s = tl.arange(0, KP).to(tl.int64)  # (row offsets s * n_col can pass 2^31)
    states = s < K
    m2 = states[:, None] & vm[None, :]
    rows = b * K * n_var + s[:, None] * n_var + v[None, :]
    acc = tl.load(field_ptr + rows, mask=m2, other=0.0)
    mrow = msg_ptr + b * K * n_col + s[:, None] * n_col
    acc = _add_slots(acc, mrow, slots_ptr, v, vm, m2, n_var, n_deg, -1)
    return acc, rows, m2, states


@triton.jit
def beliefs_kernel(
    msg_ptr,
    field_ptr,
    bel_ptr,
    slots_ptr,
    n_col,
    n_var,
    n_deg,
    K: tl.constexpr,
    KP: tl.constexpr,
    BLOCK: tl.constexpr,
):
    acc, rows, m2, _ = _gather_sum(msg_ptr, field_ptr, slots_ptr, n_col, n_var, n_deg, K, KP, BLOCK)
    tl.store(bel_ptr + rows, acc, mask=m2)


@triton.jit
def _factor_block(
    col0_ptr,
    col1_ptr,
    var0_ptr,
    var1_ptr,
    table_ptr,
    n_fac,
    K: tl.constexpr,
    KP: tl.constexpr,
    TABLE_ID: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # this program's factors: batch row, which of them exist, their two message columns, their
    # two variables, their table column; the state offsets (int64: row offsets s * n_col can
    # pass 2^31), which are real states, and the (KP, BLOCK) mask
    b, f, fm = _block(n_fac, BLOCK)
    c0 = tl.load(col0_ptr + f, mask=fm, other=0)
    c1 = tl.load(col1_ptr + f, mask=fm, other=0)
    v0 = tl.load(var0_ptr + f, mask=fm, other=0)
    v1 = tl.load(var1_ptr + f, mask=fm, other=0)
    if TABLE_ID:  # one table per factor, in factor order
        t = f
    else:
        t = tl.load(table_ptr + f, mask=fm, other=0)
    s = tl.arange(0, KP).to(tl.int64)
    states = s < K
    return b, fm, c0, c1, v0, v1, t, s, states, states[:, None] & fm[None, :]


@triton.jit
def _load_tables(tab_ptr, t, fm, s, K: tl.constexpr, n_tab, other):
    # tab[a, c, t]: entry (state a of position 0, state c of position 1) of table t, as a
    # (KP, KP, BLOCK) tile; padded lanes hold `other`
    a3 = s[:, None, None]
    c3 = s[None, :, None]
    m3 = (a3 < K) & (c3 < K) & fm[None, None, :]
    return tl.load(tab_ptr + (a3 * K + c3) * n_tab + t[None, None, :], mask=m3, other=other)


@triton.jit
def _cavity(mrow, brow, old, slots_ptr, v, c, fm, m2, n_var, n_deg, EXACT: tl.constexpr):
    # (KP, BLOCK) cavities of variables v towards the factors whose messages to them are in
    # columns c: belief - own message, or (EXACT; brow then holds the field) the field plus
    # the other incoming messages, summed (no subtraction of hard-zero sentinels)
    base = tl.load(brow + v[None, :], mask=m2, other=0.0)
    if EXACT:
        out = _add_slots(base, mrow, slots_ptr, v, fm, m2, n_var, n_deg, c)
    else:
        out = base - old
    return out


@triton.jit
def factors_kernel(
    msg_ptr,
    bel_ptr,
    out_ptr,
    tab_ptr,
    col0_ptr,
    col1_ptr,
    var0_ptr,
    var1_ptr,
    table_ptr,
    slots_ptr,
    n_fac,
    n_col,
    n_var,
    n_tab,
    n_deg,
    damping,
    K: tl.constexpr,
    KP: tl.constexpr,
    MAX: tl.constexpr,
    DAMP: tl.constexpr,
    EXACT: tl.constexpr,
    TABLE_ID: tl.constexpr,
    NEG: tl.constexpr,
    BLOCK: tl.constexpr,
):
    b, fm, c0, c1, v0, v1, t, s, states, m2 = _factor_block(
        col0_ptr, col1_ptr, var0_ptr, var1_ptr, table_ptr, n_fac, K, KP, TABLE_ID, BLOCK
    )
    mrow = msg_ptr + b * K * n_col + s[:, None] * n_col
    brow = bel_ptr + b * K * n_var + s[:, None] * n_var
    old0 = tl.load(mrow + c0[None, :], mask=m2, other=0.0)
    old1 = tl.load(mrow + c1[None, :], mask=m2, other=0.0)
    q0 = _cavity(mrow, brow, old0, slots_ptr, v0, c0, fm, m2, n_var, n_deg, EXACT)
    q1 = _cavity(mrow, brow, old1, slots_ptr, v1, c1, fm, m2, n_var, n_deg, EXACT)
    tab = _load_tables(tab_ptr, t, fm, s, K, n_tab, NEG)
    new0 = _normalise(_reduce(tab + q1[None, :, :], 1, MAX), states, NEG)
    new1 = _normalise(_reduce(tab + q0[:, None, :], 0, MAX), states, NEG)
    if DAMP:
        new0 = new0 + damping * (old0 - new0)
        new1 = new1 + damping * (old1 - new1)
    orow = out_ptr + b * K * n_col + s[:, None] * n_col
    tl.store(orow + c0[None, :], new0, mask=m2)
    tl.store(orow + c1[None, :], new1, mask=m2)


@triton.jit
def mf_factors_kernel(
    q_ptr,
    m_ptr,
    tab_ptr,
    col0_ptr,
    col1_ptr,
    var0_ptr,
    var1_ptr,
    table_ptr,
    n_fac,
    n_col,
    n_var,
    n_tab,
    K: tl.constexpr,
    KP: tl.constexpr,
    TABLE_ID: tl.constexpr,
    BLOCK: tl.constexpr,
):
    b, fm, c0, c1, v0, v1, t, s, _, m2 = _factor_block(
        col0_ptr, col1_ptr, var0_ptr, var1_ptr, table_ptr, n_fac, K, KP, TABLE_ID, BLOCK
    )
    qrow = q_ptr + b * K * n_var + s[:, None] * n_var
    q0 = tl.load(qrow + v0[None, :], mask=m2, other=0.0)
    q1 = tl.load(qrow + v1[None, :], mask=m2, other=0.0)
    tab = _load_tables(tab_ptr, t, fm, s, K, n_tab, 0.0)
    mrow = m_ptr + b * K * n_col + s[:, None] * n_col
    tl.store(mrow + c0[None, :], tl.sum(tab * q1[None, :, :], axis=1), mask=m2)
    tl.store(mrow + c1[None, :], tl.sum(tab * q0[:, None, :], axis=0), mask=m2)


@triton.jit
def mf_variables_kernel(
    m_ptr,
    field_ptr,
    q_ptr,
    out_ptr,
    slots_ptr,
    n_col,
    n_var,
    n_deg,
    damping,
    K: tl.constexpr,
    KP: tl.constexpr,
    DAMP: tl.constexpr,
    BLOCK: tl.constexpr,
):
    acc, rows, m2, states = _gather_sum(
        m_ptr, field_ptr, slots_ptr, n_col, n_var, n_deg, K, KP, BLOCK
    )
    x = tl.where(states[:, None], acc, float("-inf"))
    e = tl.exp(x - tl.max(x, axis=0)[None, :])
    new = e / tl.sum(e, axis=0)[None, :]
    if DAMP:
        new = new + damping * (tl.load(q_ptr + rows, mask=m2, other=0.0) - new)
    tl.store(out_ptr + rows, new, mask=m2)


@triton.jit
def _softplus(x, MAX: tl.constexpr):
    # log(1 + e^x), or max(x, 0) for max-product
    top = tl.maximum(x, 0.0)
    if MAX:
        out = top
    else:
        out = top + tl.log(1.0 + tl.exp(-tl.abs(x)))
    return out


@triton.jit
def _binary_message(ta0, ta1, tb0, tb1, q, MAX: tl.constexpr):
    # log-odds lae(ta1, tb1 + q) - lae(ta0, tb0 + q) (lae: log-add-exp, or max), where the
    # cavity log-odds q may be huge (evidence: +-1e30): the dominant terms are factored out
    # exactly, so no sum of a huge and a small number is ever differenced
    pos = (tb1 - tb0) + _softplus(ta1 - tb1 - q, MAX) - _softplus(ta0 - tb0 - q, MAX)
    neg = (ta1 - ta0) + _softplus(tb1 - ta1 + q, MAX) - _softplus(tb0 - ta0 + q, MAX)
    return tl.where(q >= 0, pos, neg)


@triton.jit
def binary_factors_kernel(
    lo_ptr,
    bel_ptr,
    out_ptr,
    tab_ptr,
    col0_ptr,
    col1_ptr,
    var0_ptr,
    var1_ptr,
    table_ptr,
    n_fac,
    n_col,
    n_var,
    n_tab,
    damping,
    MAX: tl.constexpr,
    DAMP: tl.constexpr,
    TABLE_ID: tl.constexpr,
    BLOCK: tl.constexpr,
):
    b, fm, c0, c1, v0, v1, t, _, _, _ = _factor_block(
        col0_ptr, col1_ptr, var0_ptr, var1_ptr, table_ptr, n_fac, 1, 2, TABLE_ID, BLOCK
    )
    old0 = tl.load(lo_ptr + b * n_col + c0, mask=fm, other=0.0)
    old1 = tl.load(lo_ptr + b * n_col + c1, mask=fm, other=0.0)
    q0 = tl.load(bel_ptr + b * n_var + v0, mask=fm, other=0.0) - old0  # cavity log-odds
    q1 = tl.load(bel_ptr + b * n_var + v1, mask=fm, other=0.0) - old1
    # tab[2 a + c, t]: entry (state a of position 0, state c of position 1) of table t
    t00 = tl.load(tab_ptr + t, mask=fm, other=0.0)
    t01 = tl.load(tab_ptr + n_tab + t, mask=fm, other=0.0)
    t10 = tl.load(tab_ptr + 2 * n_tab + t, mask=fm, other=0.0)
    t11 = tl.load(tab_ptr + 3 * n_tab + t, mask=fm, other=0.0)
    # to position 0 (state a): t[a, 0] and t[a, 1] + q1 combined; to position 1 likewise
    new0 = _binary_message(t00, t10, t01, t11, q1, MAX)
    new1 = _binary_message(t00, t01, t10, t11, q0, MAX)
    if DAMP:
        new0 = new0 + damping * (old0 - new0)
        new1 = new1 + damping * (old1 - new1)
    tl.store(out_ptr + b * n_col + c0, new0, mask=fm)
    tl.store(out_ptr + b * n_col + c1, new1, mask=fm)
