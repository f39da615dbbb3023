"""The configuration the package installs as /etc/smarthost/smarthost.toml: the annotated
example (config/smarthost.toml), with what a packaged relay must have set spelled out: where
mail for root and other local users goes (else `sendmail root` from cron is refused), and the
upstream password as the systemd credential the unit loads. Prints it on standard output."""

import sys

text = open(sys.argv[1]).read()

replacements = [
    (
        '# admin_address = "ops@example.com"\n',
        '# CHANGE THIS to an address someone reads: mail for root and every other local user\n'
        '# (cron, at, logwatch) goes there.\n'
        'admin_address = "postmaster@example.com"\n',
    ),
    (
        '# password_env = "SMARTHOST_UPSTREAM_PASSWORD"\n# # password_file = "/etc/smarthost/ses-password"\n',
        '# password_credential = "upstream-password" # the service loads /etc/smarthost/upstream-password\n'
        '# # password_env = "SMARTHOST_UPSTREAM_PASSWORD"\n# # password_file = "/etc/smarthost/ses-password"\n',
    ),
]
for old, new in replacements:
    if old not in text:
        sys.exit(f"packaged_config.py: the example no longer has {old!r}")
    text = text.replace(old, new, 1)
sys.stdout.write(
    "# Installed by the smarthost package (a conffile: your changes are kept on upgrade).\n"
    "# After editing: `smarthost check-config`, then `systemctl enable --now smarthost`\n"
    "# (or `systemctl reload smarthost` once it runs). See smarthost.toml(5).\n\n" + text
)
