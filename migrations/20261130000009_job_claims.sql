-- language=PostgreSQL
-- Every claim of a job is counted, not only the attempts: a job whose deliveries keep dying (a
-- step that crashes or hangs its worker) is moved to compensation by the claim once its attempts
-- are used up, and abandoned (failed, for an operator) if even compensating keeps dying.
alter table jobs add column claims integer not null default 0;
