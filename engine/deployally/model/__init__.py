"""Model: templates, definitions and settings parsed and validated, then rendered into specs."""
