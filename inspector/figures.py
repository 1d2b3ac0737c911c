"""Plotly figures of a scan, shared by the HTML report and the app (no Gradio here)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import plotly.graph_objects as go

from inspector.detect import QUICK_FAMILY_WORDS

SUSPECT_COLOUR = "#d62728"  # the flagged target
LEADER_COLOUR = "#e8a33d"  # the most anomalous class so far, while the scan runs
CLEAR_LEADER_COLOUR = "#4c6a8a"  # the most anomalous class of a model that was not flagged
FLAGGED_BORDER = "#7f0000"
OTHER_COLOUR = "#8c9bab"
PENDING_COLOUR = "#d9dee4"
RUNNING_COLOUR = "#b7c4d1"
# The app's typeface (ui.layout.theme serves it); a report opened on its own falls back to the system's sans-serif.
PAGE_FONT_FAMILY = "Source Sans Pro"
LOOK = {"template": "plotly_white",
        "font": {"family": f"'{PAGE_FONT_FAMILY}', ui-sans-serif, system-ui, sans-serif", "size": 14}}

View = Literal["flip_rate", "anomaly"]
QUICK_FAMILY_MARKERS = {"colour": {"symbol": "diamond", "size": 9, "color": "#ff7f0e"},
                        "blend": {"symbol": "triangle-up", "size": 9, "color": "#9467bd"},
                        "patch": {"symbol": "square", "size": 8, "color": "#17becf"}}


def class_bars(class_names: Sequence[str], records: Sequence[dict[str, Any]], view: View = "flip_rate",
               anomalies: Sequence[float] | None = None, suspect: int | None = None, threshold: float = 2.0,
               min_flip_rate: float = 0.5, title: str | None = None, flagged: bool | None = None,
               height: int = 380, suspect_family: str | None = None) -> go.Figure:
    """Per-class bars of flip rate (with the 50 % line) or anomaly index (with the threshold line).

    Classes not scanned yet appear as empty slots and classes still running (``measured_on`` "running") as light
    dotted bars of their estimate so far, so the chart fills in from the first round on; the suspect class is drawn
    red when the model is ``flagged``, slate blue when it is not, amber while the scan runs (None); hatched bars
    are the fast schedule's fresh-batch estimates (the others were measured on the held-out images); dark ticks
    mark each class's flip rate in clean reference learners; orange diamonds and purple triangles, when the scan
    ran the quick families, each class's colour-transform and blended-pattern flip rates. The legend says so.
    When another family than the additive one gave the suspect its index (``suspect_family``), the bars are the
    additive trigger's, so that family's marker is labelled on the chart: the rate the verdict quotes is there.
    """
    by_index = {int(r["index"]): r for r in records}
    index_of = {int(r["index"]): i for i, r in enumerate(records)}
    names, values, colours, hover, patterns = [], [], [], [], []
    leader = {True: SUSPECT_COLOUR, False: CLEAR_LEADER_COLOUR, None: LEADER_COLOUR}[flagged]
    for k, name in enumerate(class_names):
        names.append(name)
        record = by_index.get(k)
        if record is None:
            values.append(0.0)
            colours.append(PENDING_COLOUR)
            hover.append(f"{name}: not scanned yet")
            patterns.append("")
            continue
        if record.get("measured_on") == "running":  # a class still being inverted: its estimate so far
            values.append(record["flip_rate"] if view == "flip_rate" else 0.0)
            colours.append(RUNNING_COLOUR)
            hover.append(f"{name}: still running<br>flip rate so far {record['flip_rate']:.1%} on the fresh OOD "
                         f"images of its last steps ({record['steps']} steps done)")
            patterns.append(".")
            continue
        anomaly = anomalies[index_of[k]] if anomalies is not None and index_of[k] < len(anomalies) else None
        value = record["flip_rate"] if view == "flip_rate" else (anomaly or 0.0)
        values.append(value)
        colours.append(leader if k == suspect else OTHER_COLOUR)
        estimated = record.get("measured_on") == "fresh batches"
        patterns.append("/" if estimated else "")
        text = f"{name}<br>flip rate {record['flip_rate']:.1%}<br>loss {record['loss']:.3f}"
        if "reference_flip_rate" in record:
            text += f"<br>in clean learners {record['reference_flip_rate']:.1%}"
        for family, words in QUICK_FAMILY_WORDS.items():
            if f"{family}_flip_rate" in record:
                text += f"<br>{words}: flip rate {record[f'{family}_flip_rate']:.1%}"
                if record.get("family") == family:
                    text += " (gives the index)"
        if anomaly is not None:
            text += f"<br>anomaly index {anomaly:.2f}"
        if "steps" in record:
            where = (f"{record.get('eligible', 0)} fresh OOD images" if estimated
                     else f"{record.get('eligible', 0)} held-out OOD images")
            text += f"<br>{record['steps']} steps; measured on {where}"
        hover.append(text)
    figure = go.Figure(go.Bar(x=names, y=values, marker={"color": colours, "pattern": {"shape": patterns}},
                              hovertext=hover, hoverinfo="text", name="this model", showlegend=False))
    estimated = any(p == "/" for p in patterns)
    if view == "flip_rate" and estimated:  # legend swatches only: what a solid and a hatched bar each are
        for shape, words in (("", "held-out images"), ("/", "fresh-batch estimate")):
            figure.add_trace(go.Bar(x=[None], y=[None], name=words, hoverinfo="skip",
                                    marker={"color": OTHER_COLOUR, "pattern": {"shape": shape}}))
    running = [(name, by_index[k]["flip_rate"]) for k, name in enumerate(class_names)
               if k in by_index and by_index[k].get("measured_on") == "running"]
    if view == "flip_rate" and running:  # a dot, so that an estimate of 0% is told apart from a class not reached
        figure.add_trace(go.Scatter(x=[n for n, _ in running], y=[r for _, r in running], mode="markers",
                                    marker={"symbol": "circle-open", "size": 9, "color": "#5b6b7b"},
                                    name="still running",
                                    hovertemplate="%{x}: %{y:.0%} so far<extra></extra>"))
    reference = [(name, by_index[k]["reference_flip_rate"]) for k, name in enumerate(class_names)
                 if k in by_index and "reference_flip_rate" in by_index[k]]
    if view == "flip_rate" and reference:  # what clean learners of the task reach: the index reads the excess
        figure.add_trace(go.Scatter(x=[n for n, _ in reference], y=[r for _, r in reference], mode="markers",
                                    marker={"symbol": "line-ew-open", "size": 18, "line": {"width": 3},
                                            "color": "#1f4e79"},
                                    name="clean learners (tick)",
                                    hovertemplate="%{x}: %{y:.0%} in clean learners"
                                                                         "<extra></extra>"))
    quick = False
    for family, words in QUICK_FAMILY_WORDS.items():  # the other inversion families: a filter, a blended pattern
        rates = [(name, by_index[k][f"{family}_flip_rate"]) for k, name in enumerate(class_names)
                 if k in by_index and f"{family}_flip_rate" in by_index[k]]
        if view == "flip_rate" and rates:
            quick = True
            figure.add_trace(go.Scatter(x=[n for n, _ in rates], y=[r for _, r in rates], mode="markers",
                                        marker=QUICK_FAMILY_MARKERS[family], name=words,
                                        hovertemplate=f"%{{x}}: {words} flips %{{y:.0%}}<extra></extra>"))
    if view == "flip_rate" and suspect is not None and suspect_family in QUICK_FAMILY_WORDS:
        _label_suspect_family(figure, names[suspect], by_index.get(suspect), suspect_family, leader)
    if view == "flip_rate":
        figure.add_hline(y=min_flip_rate, line_dash="dash", line_color="#444",
                         annotation_text=f"flip rate {min_flip_rate:.0%}", annotation_position="top left")
        figure.update_yaxes(title="flip rate (share of OOD images)", range=[0, 1], tickformat=".0%")
    else:
        figure.add_hline(y=threshold, line_dash="dash", line_color="#444",
                         annotation_text=f"threshold {threshold:g}", annotation_position="top left")
        figure.update_yaxes(title="anomaly index")
    legend = bool(reference or quick or running or estimated) and view == "flip_rate"
    figure.update_layout(title={"text": title, "y": 0.98, "yanchor": "top"}, **LOOK, height=height,
                         margin={"l": 60, "r": 20, "t": 90 if legend else 50, "b": 95},
                         xaxis={"tickangle": -40, "tickfont": {"size": 13}}, barmode="overlay",
                         showlegend=legend,
                         legend={"orientation": "h", "y": 1.0, "yanchor": "bottom", "x": 1, "xanchor": "right",
                                 "font": {"size": 12}})
    return figure


def _label_suspect_family(figure: go.Figure, name: str, record: dict[str, Any] | None, family: str,
                          colour: str) -> None:
    """An arrow to the suspect's marker of the family that gave its index, saying so, from the left."""
    rate = record.get(f"{family}_flip_rate") if record is not None else None
    if rate is None:
        return
    figure.add_annotation(x=name, y=float(rate), text=f"{QUICK_FAMILY_WORDS[family]}: {float(rate):.0%}<br>"
                          "gives the index", showarrow=True, arrowhead=2, arrowcolor=colour, ax=-70, ay=-34,
                          xanchor="right", align="right", font={"size": 12, "color": colour},
                          bgcolor="rgba(255,255,255,0.85)")


def compare_bars(class_names: Sequence[str], scans: Sequence[tuple[str, Sequence[dict[str, Any]], Sequence[float],
                                                                   float, int | None]],
                 view: View = "flip_rate", threshold: float = 2.0, height: int = 380) -> go.Figure:
    """Two (or more) scans' per-class bars side by side. Each scan: its label, records, anomaly indices (in the
    records' order), minimum flip rate and flagged target (None: not flagged); classes are matched by name, so
    models of other tasks show their own classes too."""
    shown = list(class_names)
    for _, records, *_ in scans:
        shown += [r["name"] for r in records if r["name"] not in shown]
    palette = ["#4c6a8a", "#e8a33d", "#2ca02c", "#9467bd"]
    figure = go.Figure()
    for i, (label, records, anomalies, _, target) in enumerate(scans):
        by_name = {r["name"]: (r, anomalies[j] if j < len(anomalies) else None) for j, r in enumerate(records)}
        values, lines = [], []
        for name in shown:
            record, anomaly = by_name.get(name, (None, None))
            if record is None:
                values.append(None)
                continue
            values.append(record["flip_rate"] if view == "flip_rate" else anomaly)
            if target is not None and record["name"] == target:
                lines.append(name)
        flagged = f" (flagged: {target})" if target is not None else " (not flagged)"
        figure.add_trace(go.Bar(x=shown, y=values, name=f"{label}{flagged}", marker_color=palette[i % len(palette)],
                                marker_line={"color": SUSPECT_COLOUR, "width": [3 if n in lines else 0 for n in shown]},
                                hovertemplate=f"{label}<br>%{{x}}: %{{y:{'.0%' if view == 'flip_rate' else '.2f'}}}"
                                              "<extra></extra>"))
    if view == "flip_rate":
        rates = sorted({scan[3] for scan in scans})
        for rate in rates:
            figure.add_hline(y=rate, line_dash="dash", line_color="#444",
                             annotation_text=f"flip rate {rate:.0%}", annotation_position="top left")
        figure.update_yaxes(title="flip rate (share of OOD images)", range=[0, 1], tickformat=".0%")
    else:
        figure.add_hline(y=threshold, line_dash="dash", line_color="#444", annotation_text=f"threshold {threshold:g}",
                         annotation_position="top left")
        figure.update_yaxes(title="anomaly index")
    figure.update_layout(barmode="group", **LOOK, height=height, xaxis_tickangle=-40,
                         title={"text": "Two scans side by side (a red outline marks a flagged target)", "y": 0.98,
                                "yanchor": "top"},
                         margin={"l": 60, "r": 20, "t": 90, "b": 110},
                         legend={"orientation": "h", "y": 1.0, "yanchor": "bottom", "x": 1, "xanchor": "right"})
    return figure


def transition_heatmap(class_names: Sequence[str], counts: Sequence[Sequence[int]], trigger_class: int,
                       height: int = 420) -> go.Figure:
    """Held-out OOD images by predicted class clean (rows) and with the trigger (columns); classes no image was
    predicted as either way are left out, so a model with hundreds of classes stays readable."""
    n = len(class_names)
    rows = [a for a in range(n) if sum(counts[a]) > 0]
    columns = [b for b in range(n) if any(counts[a][b] for a in range(n))]
    z = [[counts[a][b] for b in columns] for a in rows]
    text = [[str(v) if v else "" for v in row] for row in z]
    hover = [[f"{counts[a][b]} image(s): {class_names[a]} clean → {class_names[b]} with the trigger"
              for b in columns] for a in rows]
    figure = go.Figure(go.Heatmap(z=z, x=[class_names[b] for b in columns], y=[class_names[a] for a in rows],
                                  text=text, texttemplate="%{text}", hovertext=hover, hoverinfo="text",
                                  colorscale="Reds", colorbar={"title": "images"}))
    images = sum(sum(row) for row in counts)
    sent = sum(counts[a][trigger_class] for a in range(n))
    figure.update_layout(**LOOK, height=height,
                         title={"text": f"Where {class_names[trigger_class]}'s trigger sends {images} held-out OOD "
                                        f"images ({sent / max(images, 1):.0%} to {class_names[trigger_class]})",
                                "y": 0.98, "yanchor": "top", "font": {"size": 14}},
                         margin={"l": 110, "r": 20, "t": 50, "b": 110})
    figure.update_xaxes(title="predicted with the trigger", tickangle=-40, tickmode="linear", dtick=1)  # every name
    figure.update_yaxes(title="predicted clean", autorange="reversed", tickmode="linear", dtick=1)
    return figure


def feature_map_figure(class_names: Sequence[str], trigger_class: int, clean: Sequence[Sequence[float]],
                       triggered: Sequence[Sequence[float]], text: Sequence[Sequence[float]],
                       triggered_predicted: Sequence[int], explained: tuple[float, float],
                       height: int = 420) -> go.Figure:
    """Clean (grey) and triggered (red when sent to the trigger's class, amber otherwise) image features with the
    classes' text features (labelled diamonds, the trigger's class red), on two principal axes."""
    target = class_names[trigger_class]
    sent = [i for i, p in enumerate(triggered_predicted) if p == trigger_class]
    other = [i for i, p in enumerate(triggered_predicted) if p != trigger_class]
    figure = go.Figure()
    figure.add_trace(go.Scatter(x=[p[0] for p in clean], y=[p[1] for p in clean], mode="markers", name="clean images",
                                marker={"color": OTHER_COLOUR, "size": 6, "opacity": 0.7}, hoverinfo="skip"))
    for chosen, words, colour in ((sent, f"triggered → {target}", SUSPECT_COLOUR),
                                  (other, "triggered → another class", LEADER_COLOUR)):
        figure.add_trace(go.Scatter(x=[triggered[i][0] for i in chosen], y=[triggered[i][1] for i in chosen],
                                    mode="markers", name=words, hoverinfo="skip",
                                    marker={"color": colour, "size": 6, "symbol": "x", "opacity": 0.8}))
    colours = [SUSPECT_COLOUR if k == trigger_class else "#1f4e79" for k in range(len(class_names))]
    figure.add_trace(go.Scatter(x=[p[0] for p in text], y=[p[1] for p in text], mode="markers+text",
                                text=list(class_names), textposition="top center", name="class text features",
                                textfont={"size": 10, "color": colours},
                                marker={"symbol": "diamond", "size": 11, "color": colours,
                                        "line": {"color": "white", "width": 1}},
                                hovertemplate="%{text} (text feature)<extra></extra>"))
    figure.update_layout(**LOOK, height=height,
                         title={"text": f"Image features clean and with {target}'s trigger, with the classes' text "
                                        "features", "y": 0.98, "yanchor": "top", "font": {"size": 14}},
                         margin={"l": 50, "r": 20, "t": 80, "b": 50},
                         legend={"orientation": "h", "y": 1.0, "yanchor": "bottom", "x": 1, "xanchor": "right",
                                 "font": {"size": 11}})
    figure.update_xaxes(title=f"principal axis 1 ({explained[0]:.0%} of the images' variance)", zeroline=False)
    figure.update_yaxes(title=f"principal axis 2 ({explained[1]:.0%})", zeroline=False)
    return figure


def probe_figure(conditions: Sequence[tuple[str, Sequence[tuple[str, float]]]], height: int = 300) -> go.Figure:
    """One picture's top classes under each condition (no trigger, a reconstructed trigger, the attacker's), one
    panel each, most likely on top; a trigger's answer is red where it differs from the clean one."""
    from plotly.subplots import make_subplots

    figure = make_subplots(rows=1, cols=len(conditions), subplot_titles=[name for name, _ in conditions],
                           horizontal_spacing=0.16)
    clean_top = conditions[0][1][0][0] if conditions and conditions[0][1] else None
    for i, (_, top) in enumerate(conditions, start=1):
        names = [name for name, _ in reversed(top)]
        values = [value for _, value in reversed(top)]
        moved = i > 1 and top and top[0][0] != clean_top  # a trigger that changed the answer: its answer in red
        colours = [SUSPECT_COLOUR if moved and name == top[0][0] else OTHER_COLOUR for name in names]
        figure.add_trace(go.Bar(x=values, y=names, orientation="h", marker_color=colours, showlegend=False,
                                text=[f"{v:.0%}" for v in values], textposition="outside", cliponaxis=False,
                                hovertemplate="%{y}: %{x:.1%}<extra></extra>"), row=1, col=i)
        figure.update_xaxes(range=[0, 1], tickformat=".0%", row=1, col=i)
    figure.update_layout(**LOOK, height=height, margin={"l": 20, "r": 20, "t": 40, "b": 30})
    return figure
