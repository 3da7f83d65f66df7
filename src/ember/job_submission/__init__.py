"""Submit jobs to an ember cluster through its dashboard, as with ``ray.job_submission``.

    from ember.job_submission import JobSubmissionClient, JobStatus
    client = JobSubmissionClient("http://127.0.0.1:8265")
    job_id = client.submit_job(entrypoint="python my_script.py",
                               runtime_env={"working_dir": "."})
"""
from .client import JobSubmissionClient
from .models import DriverInfo, JobDetails, JobInfo, JobStatus, JobType

__all__ = ["DriverInfo", "JobDetails", "JobInfo", "JobStatus", "JobSubmissionClient",
           "JobType"]
