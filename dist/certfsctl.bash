# bash completion for certfsctl: its commands, each command's options (read from
# `certfsctl COMMAND --help`, so they never go stale), and the domain and issuer names of the
# store (`certfsctl list --names`, `certfsctl issuer list --names`), of the store that --db
# names on the line when it does. Installed as share/bash-completion/completions/certfsctl.

# The options of `certfsctl ARGS... --help`: its words that start with "-".
_certfsctl_options()
{
    "$1" "${@:2}" --help 2>/dev/null | sed -n 's/^ *\(-[^ ]*\).*/\1/p' | tr ',' '\n' | grep '^-'
}

_certfsctl()
{
    local cur prev words cword
    _init_completion || return

    local prog=${words[0]} cmd="" sub="" kind="" i
    local store=() # --db and --store-key as given on the line, for the name lookups
    for ((i = 1; i < cword; i++)); do
        case ${words[i]} in
        --db | --store-key)
            store+=("${words[i]}" "${words[i + 1]}")
            ((i++))
            ;;
        -*) ;;
        *)
            if [[ -z $cmd ]]; then
                cmd=${words[i]}
            elif [[ $cmd == issuer && -z $sub ]]; then
                sub=${words[i]}
            elif [[ $cmd == issuer && $sub == add && -z $kind ]]; then
                kind=${words[i]} # issuer add local|helper|acme
            fi
            ;;
        esac
    done

    case $prev in
    --db | --store-key | --cert | --key | --chain | --new-key | --ca-bundle | --webroot)
        _filedir
        return
        ;;
    --issuer)
        COMPREPLY=($(compgen -W "$("$prog" "${store[@]}" issuer list --names 2>/dev/null)" -- "$cur"))
        return
        ;;
    --key-type)
        COMPREPLY=($(compgen -W "ec-p256 ec-p384 rsa-2048 rsa-3072 rsa-4096 ed25519" -- "$cur"))
        return
        ;;
    esac

    if [[ -z $cmd ]]; then
        COMPREPLY=($(compgen -W "init issuer add import import-certbot list show history renew rollback revoke set remove export check
            rekey-store log --db --store-key --help --help-all --version" -- "$cur"))
        return
    fi
    if [[ $cmd == issuer && -z $sub ]]; then
        COMPREPLY=($(compgen -W "add list show cert rekey remove" -- "$cur"))
        return
    fi
    if [[ $cur == -* ]]; then
        if [[ $cmd == issuer ]]; then
            COMPREPLY=($(compgen -W "$(_certfsctl_options "$prog" issuer "$sub" $kind)" -- "$cur"))
        else
            COMPREPLY=($(compgen -W "$(_certfsctl_options "$prog" "$cmd")" -- "$cur"))
        fi
        return
    fi
    case $cmd in
    show | history | import | renew | rollback | revoke | set | remove | export | log)
        COMPREPLY=($(compgen -W "$("$prog" "${store[@]}" list --names 2>/dev/null)" -- "$cur"))
        ;;
    import-certbot)
        _filedir -d # certbot's configuration directory
        ;;
    issuer)
        case $sub in
        show | cert | rekey | remove)
            COMPREPLY=($(compgen -W "$("$prog" "${store[@]}" issuer list --names 2>/dev/null)" -- "$cur"))
            ;;
        add)
            [[ -n $kind ]] || COMPREPLY=($(compgen -W "local helper acme" -- "$cur"))
            ;;
        esac
        ;;
    esac
}
complete -F _certfsctl certfsctl
