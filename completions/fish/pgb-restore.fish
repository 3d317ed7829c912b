complete -c pgb-restore -l repo -d 'Pick the artifact from this repository\'s sidecars instead of reading records on stdin; the records\' repo is DIR (a repository moved or copied elsewhere is read where it lies). DIR may be s3://bucket/prefix or ssh://[user@]host[:port]/path' -r -F
complete -c pgb-restore -l select -d 'With --repo: `latest` (the newest backup), an artifact id, or `reach` (the newest physical backup that ended before the recovery target and whose WAL in --wal-archive reaches it without a gap; for a time target, up to a commit after the target, where PostgreSQL stops: read from the WAL of plain, .zst and, with --wal-identity, encrypted segments, else the newest archived after the target). Artifacts whose latest verification failed are never picked (see --allow-failed), nor incrementals whose chain is broken (a member missing or not matching) or holds such a member' -r
complete -c pgb-restore -l cluster -d 'With --repo: only artifacts of this cluster label' -r
complete -c pgb-restore -l database -d 'With --repo: restore the logical dump of this source database (and the cluster\'s globals) instead of a physical backup' -r
complete -c pgb-restore -s i -l identity -d 'age identity file for encrypted artifacts (repeatable); refused when readable by group or others' -r -F
complete -c pgb-restore -s D -l pgdata -d 'Physical: the data directory to restore into; created when missing, refused when not empty (unless --force) or while a postmaster runs there' -r -F
complete -c pgb-restore -l wal-archive -d 'Physical: WAL archive restore_command fetches from: a directory, s3://... or ssh://... (repeatable, searched in order, as pgb-wal get takes it); checked for gaps before anything is written' -r -F
complete -c pgb-restore -l wal-identity -d 'Physical: age identity file restore_command passes to pgb-wal get (-i) to decrypt encrypted segments (NAME.age, NAME.zst.age; repeatable). Default, when the archive holds encrypted WAL: the -i files. pgb-wal get runs as the server\'s user and refuses a file it does not own or that others can read, so each file must be owned by the restored cluster\'s owner with mode 0600, in directories that user can enter; checked before anything is written, never copied' -r -F
complete -c pgb-restore -l target-time -d 'Recover up to this time (recovery_target_time), e.g. "2026-11-21 10:15:00+00" or RFC 3339' -r
complete -c pgb-restore -l target-lsn -d 'Recover up to this WAL location (recovery_target_lsn), e.g. 0/3000028' -r
complete -c pgb-restore -l target-xid -d 'Recover up to this transaction id (recovery_target_xid)' -r
complete -c pgb-restore -l target-name -d 'Recover up to this restore point, made with pg_create_restore_point (recovery_target_name)' -r
complete -c pgb-restore -l target-action -d 'What the server does at the target: promote, pause or shutdown (recovery_target_action)' -r -f -a "promote\t''
pause\t''
shutdown\t''"
complete -c pgb-restore -l target-timeline -d 'Physical: the timeline recovery follows (recovery_target_timeline): `latest` (PostgreSQL\'s default, also when not given) follows every timeline switch to the newest timeline in the archive; `current` stays on the backup\'s own timeline; a timeline ID (3, 0x3, or 00000003 as in WAL file names; written in decimal) follows the path from the backup\'s timeline to that one, through its .history file, and ignores timelines off that path. After a point-in-time recovery that went too far, the archive holds both histories: restore the backup again with `--target-timeline 1` to follow the original timeline past the fork, or with the new timeline\'s ID to follow the recovered one. The WAL check follows the same path; a timeline that does not descend from the backup\'s, or whose .history file the archive lacks, is refused before anything is written' -r
complete -c pgb-restore -l tablespace-map -d 'Put tablespace OID in DIR instead of its original location (repeatable)' -r
complete -c pgb-restore -l owner -d 'Physical: owner of the restored files; by default the owner of the data directory\'s parent directory' -r
complete -c pgb-restore -s d -l dbname -d 'Logical: the database to restore into, a name or a connection string (default: the dump\'s own database name; PGDATABASE is not used)' -r
complete -c pgb-restore -s h -l host -d 'Database server host or socket directory [env: PGHOST]' -r
complete -c pgb-restore -s p -l port -d 'Database server port [env: PGPORT]' -r
complete -c pgb-restore -s U -l username -d 'Connect as this database user [env: PGUSER]' -r
complete -c pgb-restore -l pg-bindir -d 'Directories holding PostgreSQL programs (pg_dump, pg_basebackup, psql...), separated by \':\'. pgb runs the ones matching the server\'s major version, searching only these when given, otherwise /usr/lib/postgresql/N/bin, /usr/pgsql-N/bin and PATH; none matching is an error naming the version needed' -r -F
complete -c pgb-restore -s j -l jobs -d 'Logical: parallel jobs for pg_restore' -r
complete -c pgb-restore -s t -l table -d 'Logical: restore only this table, NAME or SCHEMA.NAME ("quoted" parts as in SQL; repeatable; qualified names all of one schema). Becomes pg_restore -n SCHEMA -t NAME; a name the dump does not hold is an error before anything is restored' -r
complete -c pgb-restore -s n -l schema -d 'Logical: restore only this schema (repeatable; pg_restore -n)' -r
complete -c pgb-restore -l allow-failed -d 'Restore an artifact whose latest verification failed (pgb-verify wrote `ok: false`). Without it, --select latest and reach pass over such artifacts (naming each on stderr) and one picked by id or read on stdin is refused'
complete -c pgb-restore -l target-immediate -d 'Stop as soon as the backup is consistent (recovery_target = \'immediate\'); needs no WAL archive. Without any target, recovery replays all the WAL the archive holds'
complete -c pgb-restore -l exclusive -d 'Stop just before the target instead of just after it (recovery_target_inclusive = off); for time, LSN and xid targets'
complete -c pgb-restore -l standby -d 'Write standby.signal instead of recovery.signal: the server keeps following the archive as a standby'
complete -c pgb-restore -l force -d 'Physical: empty a non-empty data directory first (never while a postmaster runs there)'
complete -c pgb-restore -l dry-run -d 'Print the plan as records and change nothing (every file must still be there with its recorded size, as for a restore: a file of another size gives `ok: false` and exit status 1)'
complete -c pgb-restore -s C -l create-database -d 'Logical: create the target database first (it must not exist)'
complete -c pgb-restore -s O -l no-owner -d 'Logical: do not restore ownership (pg_restore --no-owner)'
complete -c pgb-restore -l no-globals -d 'Logical: skip the globals (roles) even when the set has them'
complete -c pgb-restore -l json -d 'Write pgb.v1 records (JSON lines) even when stdout is a terminal. Without it a terminal gets one short line per record (sizes in binary units, times as ages, the outcome); a pipe or a file always gets the records'
complete -c pgb-restore -l help -d 'Print help'
complete -c pgb-restore -s V -l version -d 'Print version'
