"""Plotly figures of a scan, shared by the HTML report and the app (no Gradio here)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import plotly.graph_objects as go

SUSPECT_COLOUR = "#d62728"  # the flagged target
LEADER_COLOUR = "#e8a33d"  # the most anomalous class so far, while the scan runs
CLEAR_LEADER_COLOUR = "#4c6a8a"  # the most anomalous class of a model that was not flagged
FLAGGED_BORDER = "#7f0000"
OTHER_COLOUR = "#8c9bab"
PENDING_COLOUR = "#d9dee4"
RUNNING_COLOUR = "#b7c4d1"

View = Literal["flip_rate", "anomaly"]
QUICK_FAMILY_WORDS = {"colour": "colour transform", "blend": "blended pattern"}
QUICK_FAMILY_MARKERS = {"colour": {"symbol": "diamond", "size": 9, "color": "#ff7f0e"},
                        "blend": {"symbol": "triangle-up", "size": 9, "color": "#9467bd"}}


def class_bars(class_names: Sequence[str], records: Sequence[dict[str, Any]], view: View = "flip_rate",
               anomalies: Sequence[float] | None = None, suspect: int | None = None, threshold: float = 2.0,
               min_flip_rate: float = 0.5, title: str | None = None, flagged: bool | None = None,
               height: int = 380) -> go.Figure:
    """Per-class bars of flip rate (with the 50 % line) or anomaly index (with the threshold line).

    Classes not scanned yet appear as empty slots and classes still running (``measured_on`` "running") as light
    dotted bars of their estimate so far, so the chart fills in from the first round on; the suspect class is drawn
    red when the model is ``flagged``, slate blue when it is not, amber while the scan runs (None); hatched bars
    are the fast schedule's fresh-batch estimates (the others were measured on the held-out images); dark ticks
    mark each class's flip rate in clean reference learners; orange diamonds and purple triangles, when the scan
    ran the quick families, each class's colour-transform and blended-pattern flip rates. The legend says so.
    """
    by_index = {int(r["index"]): r for r in records}
    index_of = {int(r["index"]): i for i, r in enumerate(records)}
    names, values, colours, hover, patterns = [], [], [], [], []
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
        leader = {True: SUSPECT_COLOUR, False: CLEAR_LEADER_COLOUR, None: LEADER_COLOUR}[flagged]
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
        for shape, words in (("", "measured on held-out OOD images"), ("/", "estimated on its last fresh batches")):
            figure.add_trace(go.Bar(x=[None], y=[None], name=words, hoverinfo="skip",
                                    marker={"color": OTHER_COLOUR, "pattern": {"shape": shape}}))
    running = [(name, by_index[k]["flip_rate"]) for k, name in enumerate(class_names)
               if k in by_index and by_index[k].get("measured_on") == "running"]
    if view == "flip_rate" and running:  # a dot, so that an estimate of 0% is told apart from a class not reached
        figure.add_trace(go.Scatter(x=[n for n, _ in running], y=[r for _, r in running], mode="markers",
                                    marker={"symbol": "circle-open", "size": 9, "color": "#5b6b7b"},
                                    name="still running (estimate so far)",
                                    hovertemplate="%{x}: %{y:.0%} so far<extra></extra>"))
    reference = [(name, by_index[k]["reference_flip_rate"]) for k, name in enumerate(class_names)
                 if k in by_index and "reference_flip_rate" in by_index[k]]
    if view == "flip_rate" and reference:  # what clean learners of the task reach: the index reads the excess
        figure.add_trace(go.Scatter(x=[n for n, _ in reference], y=[r for _, r in reference], mode="markers",
                                    marker={"symbol": "line-ew-open", "size": 18, "line": {"width": 3},
                                            "color": "#1f4e79"},
                                    name="clean learners' flip rate (tick)",
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
    if view == "flip_rate":
        figure.add_hline(y=min_flip_rate, line_dash="dash", line_color="#444",
                         annotation_text=f"flip rate {min_flip_rate:.0%}", annotation_position="top left")
        figure.update_yaxes(title="flip rate (share of OOD images)", range=[0, 1], tickformat=".0%")
    else:
        figure.add_hline(y=threshold, line_dash="dash", line_color="#444",
                         annotation_text=f"threshold {threshold:g}", annotation_position="top left")
        figure.update_yaxes(title="anomaly index")
    legend = bool(reference or quick or running or estimated) and view == "flip_rate"
    figure.update_layout(title={"text": title, "y": 0.98, "yanchor": "top"}, template="plotly_white", height=height,
                         margin={"l": 60, "r": 20, "t": 90 if legend else 50, "b": 110},
                         xaxis_tickangle=-40, barmode="overlay",
                         showlegend=legend,
                         legend={"orientation": "h", "y": 1.0, "yanchor": "bottom", "x": 1, "xanchor": "right",
                                 "font": {"size": 11}})
    return figure
