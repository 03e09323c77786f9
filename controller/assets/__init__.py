"""The equipment register of regulation 11.12: assets per window, who signed for them, maintenance, history."""
