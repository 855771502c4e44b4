"""The recurrent scans: a whole sequence of one cell's recurrence per call (docs/method.md, "Cells").

- :mod:`.reference`: plain autograd loops, the readable definitions every fast path is tested against;
- :mod:`.custom`: BRC, nBRC and MGU; :mod:`.standard`: GRU and LSTM in torch's layout, grouped;
- :mod:`.engine`: the one autograd path and the native-or-torch choice they all go through;
- :mod:`.native`: the native CPU kernels (``kernels.c``) behind a declared, checked interface.
"""

from pipeline.core.scans.custom import brc_scan, mgu_scan, nbrc_scan
from pipeline.core.scans.standard import gru_scan, linear_scan, lstm_gate_order, lstm_scan

__all__ = ["brc_scan", "gru_scan", "linear_scan", "lstm_gate_order", "lstm_scan", "mgu_scan", "nbrc_scan"]
