"""Reports: leaderboard.json, report.md and a self-contained report.html from result files."""
