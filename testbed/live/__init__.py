"""The running lab: build it, keep it in step with the plan, probe it, change it, run it."""
