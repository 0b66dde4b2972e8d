"""Who may do what at a site: users, roles, and electronic signatures (21 CFR 11, Annex 11)."""
