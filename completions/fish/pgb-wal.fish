# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_pgb_wal_global_optspecs
    string join \n h/help V/version
end

function __fish_pgb_wal_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_pgb_wal_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_pgb_wal_using_subcommand
    set -l cmd (__fish_pgb_wal_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c pgb-wal -n "__fish_pgb_wal_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c pgb-wal -n "__fish_pgb_wal_needs_command" -s V -l version -d 'Print version'
complete -c pgb-wal -n "__fish_pgb_wal_needs_command" -f -a "push" -d 'Archive one WAL file (archive_command: pgb-wal push %p --archive DIR)'
complete -c pgb-wal -n "__fish_pgb_wal_needs_command" -f -a "get" -d 'Fetch one WAL file (restore_command: pgb-wal get %f %p --archive DIR)'
complete -c pgb-wal -n "__fish_pgb_wal_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c pgb-wal -n "__fish_pgb_wal_using_subcommand push" -l archive -d 'Archive: a directory, ssh://[user@]host[:port]/path or s3://bucket/prefix (repeatable: the file is made durable in every one before the exit status is 0). A directory or the SSH host\'s directory must exist: a missing one (an unmounted disk) is an error, never created. S3 is configured by AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY or AWS_PROFILE; SSH uses the system ssh (BatchMode, keys and ~/.ssh/config; more arguments in PGB_SSH_OPTIONS)' -r
complete -c pgb-wal -n "__fish_pgb_wal_using_subcommand push" -s Z -l compress -d 'Compress segments and .partial files: zstd[:LEVEL] (stored as NAME.zst) or none; .history and .backup files are never compressed' -r
complete -c pgb-wal -n "__fish_pgb_wal_using_subcommand push" -s r -l recipient -d 'Encrypt segments and .partial files to this age recipient (age1..., ssh-ed25519 or ssh-rsa public key; repeatable). Stored as NAME.age or NAME.zst.age; NAME.sha256 beside it holds the sha256 and blake3 of the plaintext and of the stored file, so an identical re-push (PostgreSQL retrying after a crash) is recognised without the private key. .history and .backup files stay plaintext, so pgb-check-archive can follow timelines without a key' -r
complete -c pgb-wal -n "__fish_pgb_wal_using_subcommand push" -s R -l recipients-file -d 'Encrypt to the recipients listed in FILE, one per line (repeatable; a file without recipients is refused, never a fallback to plaintext)' -r -F
complete -c pgb-wal -n "__fish_pgb_wal_using_subcommand push" -s i -l identity -d 'Identity file used only to compare a re-pushed segment with an encrypted one whose NAME.sha256 is missing or does not describe it (repeatable; mode 0600, owned by the running user). Without it such a re-push fails and the archived file is kept' -r -F
complete -c pgb-wal -n "__fish_pgb_wal_using_subcommand push" -l lock-wait -d 'Wait at most SECONDS for another push into the same archive (each push holds DIR/.pgb.lock, and removes the temp files a killed push left behind); exit 3 when it stays held' -r
complete -c pgb-wal -n "__fish_pgb_wal_using_subcommand push" -s h -l help -d 'Print help'
complete -c pgb-wal -n "__fish_pgb_wal_using_subcommand get" -l archive -d 'Archive to look in: a directory, ssh://[user@]host[:port]/path or s3://bucket/prefix (repeatable: searched in order; NAME, NAME.zst, NAME.age and NAME.zst.age are looked for in each). An archive that cannot be asked (a host down, a missing directory) is skipped with a message; when none holds the file and one was skipped, the exit status is 255, since the file may be there. A copy that fails its checks (damaged, undecryptable) is passed over, named on stderr, for the next archive\'s; 255 when no archive holds a good one' -r
complete -c pgb-wal -n "__fish_pgb_wal_using_subcommand get" -s i -l identity -d 'Identity file to decrypt .age files (repeatable; mode 0600, owned by the running user). The decrypted segment is checked against the NAME.sha256 written at push time (its blake3 lines, or sha256 in one written by an older pgb-wal), as every fetched file is' -r -F
complete -c pgb-wal -n "__fish_pgb_wal_using_subcommand get" -l soft-fail -d 'Exit 2 instead of 255 on a real failure. PostgreSQL then treats the failure like a missing file: a standby falls back to streaming and retries later, but a point-in-time recovery ends (and promotes) at that segment. Only for standbys that also stream'
complete -c pgb-wal -n "__fish_pgb_wal_using_subcommand get" -s h -l help -d 'Print help'
complete -c pgb-wal -n "__fish_pgb_wal_using_subcommand help; and not __fish_seen_subcommand_from push get help" -f -a "push" -d 'Archive one WAL file (archive_command: pgb-wal push %p --archive DIR)'
complete -c pgb-wal -n "__fish_pgb_wal_using_subcommand help; and not __fish_seen_subcommand_from push get help" -f -a "get" -d 'Fetch one WAL file (restore_command: pgb-wal get %f %p --archive DIR)'
complete -c pgb-wal -n "__fish_pgb_wal_using_subcommand help; and not __fish_seen_subcommand_from push get help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
