"""Sans-I/O DSP: G.711, resampling, tones, DTMF and fax tone detection, conference mixing."""
