//! The charts as inline SVG, from the geometry [`crate::chart`] computes: the training loss
//! curve (job page, order panel) and the perplexity-against-baseline bars (evaluation
//! results). Each is an `role="img"` with an `aria-label` saying what it shows.

use yew::prelude::*;

use crate::chart::{BAR_HEIGHT, BAR_LABEL, BAR_MAX, HEIGHT, WIDTH, loss_plot, perplexity_bars};

/// The loss curve of `points` (step, loss); nothing before the first loss is reported.
/// `source` says where the points come from ("live" while polling, "metrics" once read).
pub fn loss_chart(points: &[(u32, f64)], source: &'static str) -> Html {
    let Some(p) = loss_plot(points) else { return html! {} };
    let (l, t, r, b) = p.frame;
    html! {
        <figure class="loss-curve">
            <svg id="loss-curve" role="img" aria-label={p.summary.clone()} data-points={p.count.to_string()}
                 data-source={source} viewBox={format!("0 0 {WIDTH} {HEIGHT}")}>
                <path class="axis" d={format!("M{l},{t}V{b}H{r}")} />
                { for p.x_ticks.iter().map(|k| html! {
                    <text x={format!("{:.1}", k.at)} y={format!("{:.1}", b + 14.0)} text-anchor="middle">{ k.label.clone() }</text>
                }) }
                { for p.y_ticks.iter().map(|k| html! {
                    <text x={format!("{:.1}", l - 4.0)} y={format!("{:.1}", k.at + 4.0)} text-anchor="end">{ k.label.clone() }</text>
                }) }
                <text x={format!("{:.1}", (l + r) / 2.0)} y={format!("{:.1}", HEIGHT - 2.0)} text-anchor="middle">{ "step" }</text>
                <text x="10" y={format!("{:.1}", (t + b) / 2.0)} text-anchor="middle"
                      transform={format!("rotate(-90 10 {:.1})", (t + b) / 2.0)}>{ "loss" }</text>
                <polyline class="curve" points={p.points.clone()} />
            </svg>
            <figcaption>{ p.summary.clone() }</figcaption>
        </figure>
    }
}

/// This evaluation's perplexity beside its baseline's (when the buyer gave one), as bars.
pub fn perplexity_chart(perplexity: f64, baseline: Option<(&str, f64)>) -> Html {
    let bars = perplexity_bars(perplexity, baseline);
    let w = BAR_LABEL + BAR_MAX + 60.0;
    html! {
        <svg id="perplexity-chart" class="bars" role="img" aria-label={bars.summary.clone()}
             data-bars={bars.bars.len().to_string()} viewBox={format!("0 0 {w} {}", bars.height)}>
            { for bars.bars.iter().enumerate().map(|(i, bar)| html! { <g class={if i == 0 { "bar this" } else { "bar baseline" }}>
                <text x={format!("{:.1}", BAR_LABEL - 6.0)} y={format!("{:.1}", bar.y + BAR_HEIGHT / 2.0 + 4.0)} text-anchor="end">{ bar.label.clone() }</text>
                <rect x={BAR_LABEL.to_string()} y={format!("{:.1}", bar.y)} width={format!("{:.1}", bar.width)} height={BAR_HEIGHT.to_string()} />
                <text x={format!("{:.1}", BAR_LABEL + bar.width + 4.0)} y={format!("{:.1}", bar.y + BAR_HEIGHT / 2.0 + 4.0)}>{ bar.value.clone() }</text>
            </g> }) }
        </svg>
    }
}
