"""Fleet-side drift detection: the intake rule for device sketches and the monitor that merges
them per device, cohort and deployment and tests them against the bundle's reference."""
