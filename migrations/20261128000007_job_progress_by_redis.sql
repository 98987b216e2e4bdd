-- language=PostgreSQL
-- Job progress is announced on Redis pub/sub by the workers instead (see
-- `tenant_domain::jobs::ProgressChannel`): a NOTIFY in every job update serialized the commits
-- of all of them (PostgreSQL takes a global lock to queue notifications at commit), which cost
-- provisioning 10–20 % of its throughput in the benchmark.

drop trigger job_progress on jobs;
drop function notify_job_progress();
