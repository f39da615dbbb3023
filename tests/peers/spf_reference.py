"""The reference SPF evaluator for the differential test: pyspf (Debian's python3-spf, RFC
7208, strict mode as receivers run it) asking only the test's own DNS server.

Run with Debian's /usr/bin/python3 (where python3-spf and python3-dnspython live):
    spf_reference.py PORT < queries.json
where queries.json is a list of {"ip", "domain", "helo"}; prints, in order, a list of
{"result", "lookups", "voids"}: check_host(ip, domain, postmaster@domain) and the DNS-querying
terms and void lookups pyspf counted.
"""

import json
import sys

import dns.resolver
import spf


def main():
    port = int(sys.argv[1])
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = port
    resolver.timeout = 2
    resolver.lifetime = 4
    # pyspf asks dnspython's module-level resolver; never the machine's own.
    dns.resolver.default_resolver = resolver
    answers = []
    for query in json.load(sys.stdin):
        q = spf.query(
            i=query["ip"],
            s="postmaster@" + query["domain"],
            h=query["helo"],
            strict=True,
            timeout=4,
        )
        result, _code, explanation = q.check()
        answers.append(
            {
                "result": result,
                "lookups": q.lookups,
                "voids": q.void_lookups,
                "why": explanation,
            }
        )
    json.dump(answers, sys.stdout)


if __name__ == "__main__":
    main()
