complete -c pgb-fixperms -l repo -d 'Repair this backup repository instead of a data directory: directories 0700, files 0600' -r -F
complete -c pgb-fixperms -l owner -d 'Owner and group to give everything [default: postgres and its primary group]; names or numeric ids; USER alone means USER\'s primary group' -r
complete -c pgb-fixperms -s j -l jobs -d 'Worker threads [default: the number of CPUs, at most 8]' -r
complete -c pgb-fixperms -l group-access -d 'Use the group-access modes 0750/0640 whatever the data directory\'s mode says'
complete -c pgb-fixperms -l no-group-access -d 'Use 0700/0600 whatever the data directory\'s mode says (a data directory restored as root with umask 022 looks like group access)'
complete -c pgb-fixperms -l check -l dry-run -d 'Dry run: print every change that is needed, change nothing; exit 1 when any is needed'
complete -c pgb-fixperms -l allow-hardlinks -d 'Accept regular files with more than one hard link (clusters upgraded with pg_upgrade --link have them); by default they are refused, since a hard link may lead to a file outside the tree'
complete -c pgb-fixperms -l force -d 'Work even though postmaster.pid names a live process (a stale pid file whose number was reused); never use it on a running cluster'
complete -c pgb-fixperms -l json -d 'Write pgb.v1 records (JSON lines) even when stdout is a terminal. Without it a terminal gets one short line per record (sizes in binary units, times as ages, the outcome); a pipe or a file always gets the records'
complete -c pgb-fixperms -l help -d 'Print help'
complete -c pgb-fixperms -s V -l version -d 'Print version'
