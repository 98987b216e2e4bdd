-- language=PostgreSQL
-- Job progress notifications: every committed change of a job's status or steps is announced on
-- the `job_progress` channel (payload: the job id), so API replicas streaming a job's progress
-- (`GET /api/v1/jobs/{id}/events`) re-read it at once instead of polling. Lease renewals, which
-- change neither, stay silent. NOTIFY is delivered on commit, so a rolled-back change is never
-- announced.

create function notify_job_progress() returns trigger
    language plpgsql as
$$
begin
    perform pg_notify('job_progress', new.id::text);
    return null;
end;
$$;

create trigger job_progress
    after update on jobs
    for each row
    when (old.status is distinct from new.status
          or old.steps is distinct from new.steps
          or old.attempts is distinct from new.attempts
          or old.error is distinct from new.error)
    execute function notify_job_progress();
