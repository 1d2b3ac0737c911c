"""The Gradio app (DESIGN §5): ``layout`` builds the page, ``handlers`` turn engine events into updates,
``workspace`` holds one browser's work, ``views`` draws engine results. The engine never imports this."""

from inspector.ui.layout import CSS, AppSettings, build_app, theme

__all__ = ["CSS", "AppSettings", "build_app", "theme"]
