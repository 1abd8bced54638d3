"""Command helpers and test harnesses that no stage imports."""
