complete -c pgb-snapshot -s d -l dbname -d 'Dump this database: a name or a connection string (repeatable)' -r
complete -c pgb-snapshot -l incremental -d 'With --physical on PostgreSQL 17 or newer: an incremental backup (pg_basebackup --incremental), holding only the blocks changed since its parent: the newest complete physical backup of the same cluster (system identifier) and timeline in the repository (auto), or the backup with id ID. pgb hands pg_basebackup the parent\'s backup_manifest itself (decrypted with -i when the parent is encrypted). A full backup is taken instead, saying why on stderr, when the server is older than 17, there is no parent, the parent\'s own chain is broken (a member missing or not matching), the timeline changed, the chain is --max-chain long, or the server lacks the WAL summaries (summarize_wal = on) since the parent. The record names the parent and the depth: "incremental": {"parent": ID, "depth": N}. pgb-restore rebuilds the chain with pg_combinebackup. Needs --compress zstd (the default) or none' -r
complete -c pgb-snapshot -l max-chain -d 'Longest chain of backups (the full one included) that --incremental builds; when the parent is the chain\'s last allowed member, a full backup starts a new chain' -r
complete -c pgb-snapshot -s i -l identity -d 'age identity file to decrypt an encrypted parent\'s backup_manifest for --incremental (repeatable)' -r -F
complete -c pgb-snapshot -s o -l out -d 'Repository directory the artifacts are written under' -r -F
complete -c pgb-snapshot -l cluster -d 'Cluster label used in the layout and records [default: the server\'s cluster_name, else its system identifier]' -r
complete -c pgb-snapshot -s Z -l compress -d 'Compression: zstd[:LEVEL] has pg_dump 16+ write zstd into the custom format itself (restorable by stock pg_restore, in parallel too), and streams older pg_dumps\' uncompressed output through multi-threaded zstd (restore with zstd -dc FILE | pg_restore ...); pg_dump[:LEVEL] uses pg_dump\'s own gzip; none stores it as is. Physical backups: pg_basebackup compresses (14\'s only gzip; pgb compresses 14\'s tars with zstd itself)' -r
complete -c pgb-snapshot -l threads -d 'zstd worker threads [default: the number of CPUs]' -r
complete -c pgb-snapshot -l maintenance-db -d 'Database to connect to for --all-databases and metadata queries' -r
complete -c pgb-snapshot -l checkpoint -d 'Checkpoint mode for --physical: fast starts at once, spread waits for the next regular checkpoint' -r -f -a "fast\t''
spread\t''"
complete -c pgb-snapshot -l lock-wait -d 'Wait up to this many seconds for the repository lock held by another run, instead of exiting with status 3 at once' -r
complete -c pgb-snapshot -l prom -d 'Write node_exporter textfile metrics to FILE (atomically, mode 0644) after the run: per cluster, kind and database the time, size and duration of the last successful backup and whether the last attempt succeeded. Series already in FILE for other clusters, kinds or databases are kept, so one file serves several runs. Give --cluster too, so a failure that happens before the server is reached is labelled with the right cluster. See pgb-metrics(7)' -r -F
complete -c pgb-snapshot -s h -l host -d 'Database server host or socket directory [env: PGHOST]' -r
complete -c pgb-snapshot -s p -l port -d 'Database server port [env: PGPORT]' -r
complete -c pgb-snapshot -s U -l username -d 'Connect as this database user [env: PGUSER]' -r
complete -c pgb-snapshot -l pg-bindir -d 'Directories holding PostgreSQL programs (pg_dump, pg_basebackup, psql...), separated by \':\'. pgb runs the ones matching the server\'s major version, searching only these when given, otherwise /usr/lib/postgresql/N/bin, /usr/pgsql-N/bin and PATH; none matching is an error naming the version needed' -r -F
complete -c pgb-snapshot -s a -l all-databases -d 'Dump every database that accepts connections, except templates, one artifact each'
complete -c pgb-snapshot -s g -l globals -d 'Dump roles, memberships and tablespaces (pg_dumpall --globals-only) into their own artifact'
complete -c pgb-snapshot -l physical -d 'Take a physical base backup with pg_basebackup (tar, WAL streamed in, backup_manifest with SHA256 checksums)'
complete -c pgb-snapshot -l statistics -d 'Include planner statistics in logical dumps (pg_dump --statistics, PostgreSQL 18\'s pg_dump; an older server is dumped with pg_dump 18 when it is installed, and its dumps then need pg_restore 18)'
complete -c pgb-snapshot -l no-row-counts -d 'Skip the exact per-table row counts (for very large databases; the counts read every table once more)'
complete -c pgb-snapshot -l json -d 'Write pgb.v1 records (JSON lines) even when stdout is a terminal. Without it a terminal gets one short line per record (sizes in binary units, times as ages, the outcome); a pipe or a file always gets the records'
complete -c pgb-snapshot -l help -d 'Print help'
complete -c pgb-snapshot -s V -l version -d 'Print version'
