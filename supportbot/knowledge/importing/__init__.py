"""Import a help center into the knowledge folder: web pages, sitemaps, folders, PDFs, CSV.

Imported documents become Markdown files under ``knowledge/imported/`` (front matter with
``kind: imported``), so staff read, edit, version and delete them like FAQ files. The loader
splits each into passages (``passages``); fetching, extraction and refresh live in the other
modules of this package, which import optional dependencies (``supportbot[import]``) and are
therefore not imported here: the loader must keep working without them.
"""
