"""Plan: desired specs against live instances become actions, their order and their report. Pure."""
