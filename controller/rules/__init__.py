"""The rules engine: facts + policy + calendar + approvals + exemptions → violations with evidence."""
