"""Scale benchmark (issue 15): search, contact list and export at 20,000 and 1,000,000 contacts."""
