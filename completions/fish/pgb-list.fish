complete -c pgb-list -l repo -d 'The repository to list (its .pgb.json sidecars): a directory, s3://bucket/prefix (the AWS variables and files, as pgb-ship) or ssh://[user@]host[:port]/path (the system ssh, PGB_SSH_OPTIONS), e.g. a copy pgb-ship made; the listings\' repo is DIR, wherever the records were written. An empty directory, or one holding no sidecar, is an error' -r -F
complete -c pgb-list -l wal-archive -d 'A WAL archive as pgb-wal push writes it: a directory, s3://... or ssh://... (repeatable, as pgb-restore takes them): adds each cluster\'s recovery window; an archive that cannot be read is an error. The archives must belong to the listed cluster; with physical backups of several clusters in the repository, name one with --cluster' -r -F
complete -c pgb-list -l wal-identity -d 'age identity file for an archive of encrypted segments (pgb-wal push -r/-R; repeatable): the last segments of each run are decrypted to read their commit times. Without it, a range of encrypted WAL ends when its last segment was archived' -r -F
complete -c pgb-list -l cluster -d 'Only this cluster label' -r
complete -c pgb-list -l database -d 'Only artifacts of this database (logical dumps)' -r
complete -c pgb-list -l kind -d 'Only artifacts of this kind' -r -f -a "logical\t''
globals\t''
physical\t''
wal\t''"
complete -c pgb-list -l since -d 'Only artifacts taken since then: a duration back from now (90s, 15m, 2h, 7d) or a time (RFC 3339, or 2026-11-21 10:15:00+00)' -r
complete -c pgb-list -l require-window -d 'Exit 1 unless each cluster\'s recovery window, its newest unbroken range, spans at least DURATION (e.g. 7d); needs --wal-archive' -r
complete -c pgb-list -l media -d 'Media label of the original (the repository) for the 3-2-1 verdict' -r
complete -c pgb-list -l site -d 'Site label of the original (the repository) for the 3-2-1 verdict' -r
complete -c pgb-list -l failed -d 'Only artifacts whose latest verification of some method failed'
complete -c pgb-list -l unverified -d 'Only artifacts never verified (with --failed: either)'
complete -c pgb-list -l json -d 'Print pgb.v1 records even when stdout is a terminal'
complete -c pgb-list -l help -d 'Print help'
complete -c pgb-list -s V -l version -d 'Print version'
