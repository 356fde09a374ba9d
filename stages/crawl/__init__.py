"""The crawler stage (`crawl`: frontier -> fetch -> WARC) and its HTTP, robots.txt and
SSRF-guard helpers (`net`)."""
