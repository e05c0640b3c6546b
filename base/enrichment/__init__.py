"""Enrichment: everything the pipeline learns about a document from what it says.

One place for it: ``steps`` (the enrichment steps run on every document, in order), ``language``
(English / Malayalam / mixed), ``classifier`` and ``department_rules`` (the six departments and the
rules file they are read from) and ``rules`` (the content rules that decide what is ingested).
"""
