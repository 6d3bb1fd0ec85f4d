"""Run by the WebUI before it parses its command line: adds this extension's flags."""


def preload(parser):
    parser.add_argument("--hypernetwork-ext-no-patches", action="store_true",
                        help="hypernetwork extension: change nothing in the WebUI (no patches, no tabs)")
