"""The one-run canary audit: canary records, the canary run and its epsilon lower bound."""
