//! Small charts as plain data: the geometry of the training loss curve and of the
//! perplexity-against-baseline bars, in SVG user units, with the words a screen reader says
//! instead of the picture. The components in `app::chart` only turn these into `<svg>`
//! elements, so every number drawn is computed (and tested) here; hand-written SVG keeps the
//! module free of a charting dependency.

use posthuman_types::JobProgress;

/// The drawing area of both charts (SVG user units; the element scales to its box).
pub const WIDTH: f64 = 320.0;
pub const HEIGHT: f64 = 160.0;
/// Room left for the axis labels: left (loss ticks), bottom (step ticks).
const LEFT: f64 = 44.0;
const BOTTOM: f64 = 28.0;
const TOP: f64 = 8.0;
const RIGHT: f64 = 8.0;
/// Points kept while following a job live: progress is polled every second, so this covers
/// hours of training; the oldest half is thinned when it is reached (the curve's shape stays).
pub const MAX_LIVE_POINTS: usize = 512;

/// Adds the latest `(step, loss)` of a running train job to `points`, once per step: the same
/// progress read twice (a poll faster than a step) adds nothing, and a step number going
/// backwards (a retry of the job) starts the curve again. Non-finite losses are not drawn.
pub fn accumulate(points: &mut Vec<(u32, f64)>, p: &JobProgress) {
    let Some(loss) = p.loss.filter(|l| l.is_finite()) else { return };
    let Ok(step) = u32::try_from(p.done) else { return };
    match points.last() {
        Some((last, _)) if *last == step => return,
        Some((last, _)) if *last > step => points.clear(),
        _ => {}
    }
    if points.len() >= MAX_LIVE_POINTS {
        // Every other point of the older half: bounded memory, the ends kept exact.
        let half = points.len() / 2;
        let older: Vec<(u32, f64)> = points[..half].iter().step_by(2).copied().collect();
        points.splice(..half, older);
    }
    points.push((step, loss));
}

/// A tick on an axis: where (in SVG units along the axis) and its label.
#[derive(Clone, Debug, PartialEq)]
pub struct Tick {
    pub at: f64,
    pub label: String,
}

/// The loss curve, ready to draw.
#[derive(Clone, Debug, PartialEq)]
pub struct LossPlot {
    /// The polyline's `points` attribute ("x,y x,y …").
    pub points: String,
    /// How many points it draws.
    pub count: usize,
    /// The plot's frame: left, top, right, bottom.
    pub frame: (f64, f64, f64, f64),
    /// Step ticks (x) and loss ticks (y).
    pub x_ticks: Vec<Tick>,
    pub y_ticks: Vec<Tick>,
    /// What the picture says, for `aria-label`.
    pub summary: String,
}

/// A loss with as many decimals as its size needs (losses go from ~11 down to ~0.01).
fn loss_label(l: f64) -> String {
    if l.abs() >= 10.0 { format!("{l:.1}") } else { format!("{l:.2}") }
}

/// The curve of `points` (step, loss), steps increasing; `None` when there is nothing to draw.
/// A single point is drawn as a dot-sized segment so that a curve is there from the first
/// progress report on.
pub fn loss_plot(points: &[(u32, f64)]) -> Option<LossPlot> {
    let pts: Vec<(u32, f64)> = points.iter().copied().filter(|(_, l)| l.is_finite()).collect();
    let (first, last) = (*pts.first()?, *pts.last()?);
    let (x0, x1) = (first.0 as f64, last.0 as f64);
    let mut lo = pts.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let mut hi = pts.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    if hi - lo < 1e-9 {
        // A flat curve: a band around it, so that it sits mid-height.
        (lo, hi) = (lo - 0.5, hi + 0.5);
    }
    let (left, top, right, bottom) = (LEFT, TOP, WIDTH - RIGHT, HEIGHT - BOTTOM);
    let sx = |s: f64| if x1 > x0 { left + (s - x0) / (x1 - x0) * (right - left) } else { left };
    let sy = |l: f64| bottom - (l - lo) / (hi - lo) * (bottom - top);
    let mut xy: Vec<String> =
        pts.iter().map(|(s, l)| format!("{:.1},{:.1}", sx(*s as f64), sy(*l))).collect();
    if pts.len() == 1 {
        xy.push(format!("{:.1},{:.1}", left + 2.0, sy(first.1)));
    }
    let x_ticks = if x1 > x0 {
        vec![
            Tick { at: left, label: first.0.to_string() },
            Tick { at: right, label: last.0.to_string() },
        ]
    } else {
        vec![Tick { at: left, label: first.0.to_string() }]
    };
    let y_ticks = vec![
        Tick { at: sy(hi), label: loss_label(hi) },
        Tick { at: sy(lo), label: loss_label(lo) },
    ];
    let summary = if pts.len() == 1 {
        format!("Training loss {} at step {}", loss_label(first.1), first.0)
    } else {
        format!(
            "Training loss from {} at step {} to {} at step {} ({} points)",
            loss_label(first.1),
            first.0,
            loss_label(last.1),
            last.0,
            pts.len()
        )
    };
    Some(LossPlot {
        points: xy.join(" "),
        count: pts.len(),
        frame: (left, top, right, bottom),
        x_ticks,
        y_ticks,
        summary,
    })
}

/// One bar of the perplexity chart.
#[derive(Clone, Debug, PartialEq)]
pub struct Bar {
    pub label: String,
    /// The value as written beside the bar ("∞" when unbounded).
    pub value: String,
    /// Bar length in SVG units (the longest bar spans the chart).
    pub width: f64,
    pub y: f64,
}

/// The perplexity bars: this evaluation, then its baseline when the buyer gave one.
#[derive(Clone, Debug, PartialEq)]
pub struct Bars {
    pub bars: Vec<Bar>,
    pub height: f64,
    pub summary: String,
}

/// Bar layout: a label column, the bar, then room for its value.
pub const BAR_LABEL: f64 = 110.0;
pub const BAR_MAX: f64 = 150.0;
pub const BAR_HEIGHT: f64 = 22.0;
const BAR_GAP: f64 = 10.0;

fn ppl_label(p: f64) -> String {
    if p.is_finite() { format!("{p:.3}") } else { "∞".into() }
}

/// The bars of a perplexity (and its baseline). Lower is better; an unbounded perplexity is a
/// full-length bar written "∞", and the other bars are scaled against the finite ones.
pub fn perplexity_bars(perplexity: f64, baseline: Option<(&str, f64)>) -> Bars {
    let mut rows = vec![("this evaluation".to_string(), perplexity)];
    if let Some((label, b)) = baseline {
        // The buyer's label, cut to fit the label column (the summary says it whole).
        let short: String = label.chars().take(18).collect();
        let cut = if short.len() < label.len() { "…" } else { "" };
        rows.push((format!("baseline: {short}{cut}"), b));
    }
    let finite_max = rows.iter().map(|r| r.1).filter(|v| v.is_finite()).fold(0.0, f64::max);
    // An unbounded bar is the full length; finite ones then stop short of it.
    let span = if rows.iter().any(|r| !r.1.is_finite()) { BAR_MAX * 0.8 } else { BAR_MAX };
    let bars = rows
        .iter()
        .enumerate()
        .map(|(i, (label, v))| {
            let width = if !v.is_finite() || finite_max <= 0.0 {
                BAR_MAX
            } else {
                (v / finite_max * span).max(1.0)
            };
            Bar {
                label: label.clone(),
                value: ppl_label(*v),
                width,
                y: i as f64 * (BAR_HEIGHT + BAR_GAP),
            }
        })
        .collect::<Vec<_>>();
    let summary = match baseline {
        Some((label, b)) if perplexity.is_finite() && b.is_finite() && b > 0.0 => format!(
            "Perplexity {} against {} for the baseline {label} (ratio {:.3}; lower is better)",
            ppl_label(perplexity),
            ppl_label(b),
            perplexity / b
        ),
        Some((label, b)) => format!(
            "Perplexity {} against {} for the baseline {label} (lower is better)",
            ppl_label(perplexity),
            ppl_label(b)
        ),
        None => format!("Perplexity {} (no baseline given)", ppl_label(perplexity)),
    };
    let height = bars.len() as f64 * (BAR_HEIGHT + BAR_GAP) - BAR_GAP;
    Bars { bars, height, summary }
}

#[cfg(test)]
mod tests {
    use posthuman_types::JobKind;

    use super::*;

    fn progress(done: u64, loss: Option<f64>) -> JobProgress {
        JobProgress {
            kind: JobKind::Train,
            phase: "training".into(),
            done,
            total: 10,
            loss,
            tokens_per_sec: 1.0,
            elapsed_secs: 1.0,
            eta_secs: None,
        }
    }

    #[test]
    fn live_points_are_one_per_step_and_restart_on_a_retry() {
        let mut pts = vec![];
        accumulate(&mut pts, &progress(0, None));
        accumulate(&mut pts, &progress(1, Some(5.0)));
        accumulate(&mut pts, &progress(1, Some(5.0)));
        accumulate(&mut pts, &progress(3, Some(4.0)));
        accumulate(&mut pts, &progress(4, Some(f64::NAN)));
        assert_eq!(pts, vec![(1, 5.0), (3, 4.0)]);
        accumulate(&mut pts, &progress(2, Some(6.0)));
        assert_eq!(pts, vec![(2, 6.0)]);
    }

    #[test]
    fn live_points_stay_bounded_with_both_ends_exact() {
        let mut pts = vec![];
        for s in 1..=5000u64 {
            accumulate(&mut pts, &progress(s, Some(10.0 / s as f64)));
        }
        assert!(pts.len() <= MAX_LIVE_POINTS, "{}", pts.len());
        assert_eq!(pts.first().map(|p| p.0), Some(1));
        assert_eq!(pts.last().map(|p| p.0), Some(5000));
        assert!(pts.windows(2).all(|w| w[0].0 < w[1].0), "steps increase");
    }

    #[test]
    fn the_curve_spans_the_frame_with_the_highest_loss_on_top() {
        let p = loss_plot(&[(1, 8.0), (5, 6.0), (9, 2.0)]).unwrap();
        assert_eq!(p.count, 3);
        assert_eq!(p.points, "44.0,8.0 178.0,49.3 312.0,132.0");
        assert_eq!(p.x_ticks.iter().map(|t| t.label.as_str()).collect::<Vec<_>>(), ["1", "9"]);
        assert_eq!(
            p.y_ticks.iter().map(|t| t.label.as_str()).collect::<Vec<_>>(),
            ["8.00", "2.00"]
        );
        assert_eq!(p.summary, "Training loss from 8.00 at step 1 to 2.00 at step 9 (3 points)");
        assert_eq!(loss_plot(&[]), None);
        assert_eq!(loss_plot(&[(3, f64::INFINITY)]), None);
    }

    #[test]
    fn one_point_or_a_flat_curve_is_still_drawn_mid_height() {
        let p = loss_plot(&[(4, 10.5)]).unwrap();
        assert_eq!((p.count, p.points.as_str()), (1, "44.0,70.0 46.0,70.0"));
        assert_eq!(p.summary, "Training loss 10.5 at step 4");
        let flat = loss_plot(&[(1, 3.0), (2, 3.0)]).unwrap();
        assert_eq!(flat.points, "44.0,70.0 312.0,70.0");
    }

    #[test]
    fn bars_scale_to_the_larger_and_say_the_ratio() {
        let b = perplexity_bars(50.0, Some(("GPT-2 small", 100.0)));
        assert_eq!(b.bars.len(), 2);
        assert_eq!((b.bars[0].width, b.bars[1].width), (BAR_MAX / 2.0, BAR_MAX));
        assert_eq!(b.bars[1].label, "baseline: GPT-2 small");
        assert_eq!(
            b.summary,
            "Perplexity 50.000 against 100.000 for the baseline GPT-2 small (ratio 0.500; lower is better)"
        );
        let alone = perplexity_bars(f64::INFINITY, None);
        assert_eq!((alone.bars[0].width, alone.bars[0].value.as_str()), (BAR_MAX, "∞"));
        assert_eq!(alone.summary, "Perplexity ∞ (no baseline given)");
        let inf = perplexity_bars(f64::INFINITY, Some(("b", 20.0)));
        assert_eq!((inf.bars[0].width, inf.bars[1].width), (BAR_MAX, BAR_MAX * 0.8));
    }
}
