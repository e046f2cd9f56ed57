"""What `synfin report` calls a finding: its thresholds (findings.py), in a module without numpy.

`synfin` builds every command's parser when it starts, `synfin report`'s with
--min-time-wait's default; importing findings.py there would import numpy
(~50 ms) for every command, `synfin analyze` of a small file too.
"""

MIN_PILE = 50  # TIME_WAIT at once on one endpoint's side before it is called a pile (synfin report --min-time-wait)
MIN_LINGER = 10.0  # seconds a FIN_WAIT_2 must have lasted at the capture's end
SLOW_RTT = 0.2  # seconds: a median handshake this slow is reported
