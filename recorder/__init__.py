"""Recording demonstrations: the crash-safe dataset format, the recording session, replay, idle trimming, output-folder safety."""
