"""Where a bulk run's photos and videos are stylized: in the job's own process, or on Ray."""
