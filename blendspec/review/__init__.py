"""`blend diff`: ``diff`` (the semantic change model, renames, the section differ, the impact of
a change on a dump, git pairing) and ``render`` (text, JSON, Markdown and GitHub renderings)."""
