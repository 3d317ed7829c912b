complete -c pgb-check-archive -l system-identifier -d 'The cluster\'s system identifier (pg_controldata, or `SELECT system_identifier FROM pg_control_system()`): every segment must carry it [default: the most common one in the archive]' -r
complete -c pgb-check-archive -l segment-size -d 'The cluster\'s WAL segment size in bytes (`SHOW wal_segment_size`, pg_controldata\'s "Bytes per WAL segment") [default: the server\'s with -d, else the one the segments\' headers carry]. Needed to check the continuity of an archive of encrypted segments without -i' -r
complete -c pgb-check-archive -l max-age -d 'Fail (exit 1, problem `stale`) when the newest segment was archived more than SECONDS ago' -r
complete -c pgb-check-archive -l prom -d 'Write node_exporter textfile metrics to FILE atomically (mode 0644, also when the check cannot run)' -r -F
complete -c pgb-check-archive -l repo -d 'Judge the physical backups of this repository (their .pgb.json sidecars) as --backups does for stdin; their records, with `archive_check`, go to stdout and the sidecars are left unchanged' -r -F
complete -c pgb-check-archive -s i -l identity -d 'Identity file to decrypt the first page of encrypted (.age) segments (repeatable; mode 0600, owned by the running user). Without it they are counted as present (continuity) and unchecked' -r -F
complete -c pgb-check-archive -s d -l dbname -d 'Also ask the server archiving into ARCHIVE_DIR (a database name or a connection string): pg_stat_archiver (a failure newer than the last success is a problem; so is a last archived file missing from the archive), and its current WAL position (pg_current_wal_lsn, or pg_last_wal_receive_lsn on a standby) against the archive\'s newest segment. Its system identifier is what every segment must carry unless --system-identifier is given. Any role will do: what is read is readable by PUBLIC by default' -r
complete -c pgb-check-archive -l max-behind -d 'With -d: fail (problem `behind`) when more than SEGMENTS finished segments of the server\'s timeline are not in the archive yet' -r
complete -c pgb-check-archive -s h -l host -d 'Database server host or socket directory [env: PGHOST]' -r
complete -c pgb-check-archive -s p -l port -d 'Database server port [env: PGPORT]' -r
complete -c pgb-check-archive -s U -l username -d 'Connect as this database user [env: PGUSER]' -r
complete -c pgb-check-archive -l pg-bindir -d 'Directory holding the PostgreSQL client programs to run (pg_dump, pg_basebackup, psql...); by default they are found on PATH' -r -F
complete -c pgb-check-archive -l backups -d 'Read pgb.v1 records on stdin: each physical backup artifact is written out again with an `archive_check` field saying whether every segment from its start to its stop is in the archive; other records are forwarded untouched'
complete -c pgb-check-archive -l help -d 'Print help'
complete -c pgb-check-archive -s V -l version -d 'Print version'
