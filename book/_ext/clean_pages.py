"""Keep the built pages free of browser console errors (checked by the browser test).

- sphinx-thebe 0.3.1 registers its inline config script twice under Jupyter Book 1.x,
  which throws "Identifier 'THEBE_JS_URL' has already been declared": drop duplicates.
- pydata-sphinx-theme warns "invalid theme mode" when no default mode is set.
"""


def _clean_context(app, pagename, templatename, context, doctree):
    context["default_mode"] = context.get("default_mode") or "light"
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for js in scripts:
        attrs = getattr(js, "attributes", {}) or {}
        key = (getattr(js, "filename", None) or "", tuple(sorted((k, str(v)) for k, v in attrs.items())))
        if key not in seen:
            seen.add(key)
            unique.append(js)
    scripts[:] = unique


def setup(app):
    app.connect("html-page-context", _clean_context, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
