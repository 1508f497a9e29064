"""Many runs: run folders, result rows and tables, multi-task gain."""
