"""The numbers of chapter 4's discussion, by name, formatted for ``glue`` from its study."""

from __future__ import annotations

import numpy as np

from mplp.chapters.truncation import TruncationStudy

_SUP = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def _sci(x: float) -> str:
    """A number for prose (glued text, not math): 3 significant digits between 0.001 and
    10,000, else two, times a power of ten ("1.8 × 10⁴", "1.3 × 10⁻⁷")."""
    x = float(x)
    if x == 0 or 1e-3 <= abs(x) < 1e4:
        return f"{x:.3g}" if abs(x) < 1e3 else f"{x:,.0f}"
    mant, exp = f"{x:.1e}".split("e")
    return f"{mant} × 10{str(int(exp)).translate(_SUP)}"


def discussion_values(st: TruncationStudy, n_params: int | None = None) -> dict[str, str]:
    """Every number of chapter 4's discussion, by name, formatted for ``glue`` (so a re-run
    with another profile rewrites the prose with its own results).  ``n_params``: the
    number of meta-parameters of the MPLP runs."""
    return {**_landscape_values(st), **_lr_values(st), **_toy_values(st), **_mplp_values(st, n_params)}


def _landscape_values(st) -> dict[str, str]:
    """Fig. 3's landscape and the momentum gradients' growth with T."""
    v: dict[str, str] = {}
    rows = st.rows
    first, last = rows[0], rows[-1]
    rough = max(rows, key=lambda r: r.jumps)
    v.update(tr_T_first=f"{first.T}", tr_T_last=f"{last.T:,}", tr_T_rough=f"{rough.T}",
             tr_slope_first=_sci(first.max_slope), tr_jumps_first=f"{first.jumps}",
             tr_jumps_rough=f"{rough.jumps}", tr_slope_rough=_sci(rough.max_slope), tr_jumps_last=f"{last.jumps}")
    g = np.asarray(st.momentum_grad, float)
    peak = int(np.argmax(g))
    v.update(tr_mg_first=_sci(g[0]), tr_mg_peak=_sci(g[peak]), tr_T_peak=f"{rows[peak].T}", tr_mg_last=_sci(g[-1]))
    return v


def _lr_values(st) -> dict[str, str]:
    """Appendix A's lr gradients, the learned lr per truncation against the grid, PES and ES."""
    v: dict[str, str] = {}
    lg = st.lr_grad
    rel = float(((lg.formula - lg.autograd).abs() / lg.autograd.abs().clamp_min(1e-300)).max())
    a = lg.autograd.abs()
    v.update(tr_appA_rel=f"{rel:.0e}", tr_lrg_lr=f"{float(lg.lrs[0]):g}", tr_lrg_first=_sci(a[0, 0]),
             tr_lrg_last=_sci(a[0, -1]), tr_lrg_T_first=f"{lg.horizons[0]}", tr_lrg_T_last=f"{lg.horizons[-1]}",
             tr_lrg_dir="shrinks" if a[0, -1] < a[0, 0] else "grows")
    k0, kN = min(st.truncations), max(st.truncations)
    late = {k: st.traces[f"tbptt-{k}"].late_lr() for k in st.truncations}
    for k in st.truncations:
        v[f"tr_late_{k}"] = _sci(late[k])
    v.update(tr_k_short=f"{k0}", tr_k_full=f"{kN:,}",
             tr_opt=_sci(st.grid.best_lr), tr_late_short=_sci(late[k0]), tr_late_full=_sci(late[kN]),
             tr_late_list=", ".join(f"{_sci(late[k])} with {k:,}-step truncations" for k in st.truncations[:-1]))
    tg = st.truncation_grads.get(k0)
    if tg is not None:
        v.update(tr_tg_first=f"{tg.grads[0]:+.2g}", tr_tg_last=f"{tg.grads[-1]:+.2g}", tr_tg_sum=f"{tg.cumulative[-1]:+.2g}",
                 tr_tg_lr=f"{tg.lr:g}")
    lrs, loss = np.log(st.grid.lrs), st.grid.loss
    ok = np.isfinite(loss)
    v.update(tr_bias_loss=f"{float(np.interp(np.log(late[k0]), lrs[ok], loss[ok])):.3g}",
             tr_opt_loss=f"{float(loss[ok][np.argmin(loss[ok])]):.3g}")
    pes, es = st.traces.get(f"pes-{k0}"), st.traces.get(f"es-{kN}")
    if pes is not None:
        tb = st.traces[f"tbptt-{k0}"]
        v.update(tr_pes=_sci(pes.late_lr()), tr_pes_ratio=f"{pes.late_lr() / st.grid.best_lr:.2f}",
                 tr_pes_var=_sci(pes.grad_var), tr_tb_var=_sci(tb.grad_var),
                 tr_var_ratio=f"{pes.grad_var / tb.grad_var:.0f}", tr_pes_min=_sci(pes.lr.min()), tr_pes_max=_sci(pes.lr.max()))
    if es is not None:
        v.update(tr_es=_sci(es.late_lr()), tr_es_updates=f"{len(es.lr)}")
    return v


def _toy_values(st) -> dict[str, str]:
    """The toy's ES, PES and backprop estimates compared."""
    v: dict[str, str] = {}
    te = st.toy
    agree = np.abs(te.es.mean(1) - te.exact) <= 0.01
    agree &= np.abs(te.combined.mean(1) - te.exact) <= 0.01
    upto = int(np.argmin(agree)) if not agree.all() else len(agree)
    # probes where backprop is small but ES is far from it: ES sees a jump within sigma
    jump = (np.abs(te.exact) < 1) & (np.abs(te.es.mean(1) - te.exact) > 1)
    big = np.abs(te.exact) > 100
    smoothed = np.concatenate([te.es.mean(1)[big], te.combined.mean(1)[big]]) if big.any() else np.array([np.nan])
    ratio = te.combined.std(1) / np.where(te.es.std(1) > 0, te.es.std(1), np.nan)
    v.update(tr_toy_T=f"{te.T}", tr_agree_below=f"{te.momenta[upto - 1]:.2f}" if upto else "none",
             tr_agree_n=f"{upto}", tr_probes=f"{len(te.momenta)}",
             tr_jump_m=", ".join(f"{m:.2f}" for m in te.momenta[jump]) or "none",
             tr_jump_es=", ".join(f"{a:+.2g} ± {b:.2g}" for a, b in zip(te.es.mean(1)[jump], te.es.std(1)[jump])) or "none",
             tr_jump_exact=", ".join(f"{x:+.2g}" for x in te.exact[jump]) or "none",
             tr_jump_comb=", ".join(f"± {x:.2g}" for x in te.combined.std(1)[jump]) or "none",
             tr_big_n=f"{int(big.sum())}", tr_big_m=", ".join(f"{m:.2f}" for m in te.momenta[big]) or "none",
             tr_big_exact=", ".join(f"{x:+.0f}" for x in te.exact[big]) or "none",
             tr_big_smoothed=f"{np.nanmin(smoothed):+.0f} to {np.nanmax(smoothed):+.0f}" if big.any() else "none",
             tr_spread_ratio=f"{np.nanmedian(ratio):.2f}")
    return v


def _mplp_values(st, n_params: int | None) -> dict[str, str]:
    """The MPLP runs with each estimator."""
    v: dict[str, str] = {}
    m = st.mplp_runs
    if m:
        tb = m["tbptt"]
        vl = tb.validation["val_loss"]
        v.update(tr_mplp_S=f"{int(tb.meta['steps_done']):,}", tr_mplp_start=f"{vl[0]:.1f}", tr_mplp_tbptt=f"{vl[-1]:.1f}",
                 tr_mplp_pairs=f"{tb.config.meta.es_pairs}", tr_mplp_sigma=f"{tb.config.meta.es_sigma:g}",
                 tr_mplp_perturbed=f"{2 * tb.config.meta.es_pairs}")
        for est, r in m.items():
            v[f"tr_mplp_{est}_end"] = f"{r.validation['val_loss'][-1]:.1f}"
            v[f"tr_mplp_{est}_cost"] = f"{r.meta['wall_time_s'] / max(1, r.meta['steps_done']):.3f}"
        ends = {est: r.validation["val_loss"][-1] for est, r in m.items()}
        beat = [est.upper() for est in ("es", "pes") if est in ends and ends[est] < ends["tbptt"]]
        v["tr_mplp_cmp"] = ("neither ES nor PES gets below truncated BPTT" if not beat else
                            f"{' and '.join(beat)} get{'s' if len(beat) == 1 else ''} below truncated BPTT")
        if n_params is None:
            n_params = sum(t.numel() for t in tb.theta.values())
        v["tr_mplp_params"] = f"{n_params:,}"
    return v
