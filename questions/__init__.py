"""The questions of the study, one module each: its settings, training, findings, words and figures."""
