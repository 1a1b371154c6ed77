"""Mel filterbank as OpenAI whisper uses it (librosa's Slaney-style filters).

whisper.cpp computes log-mel spectrograms with the filterbank stored in the
model file, so the converter must write exactly the matrix whisper was trained
with: ``librosa.filters.mel(sr=16000, n_fft=400, n_mels=80)`` with the Slaney
mel scale and Slaney area normalisation. Re-implemented here in numpy so the
converter does not depend on librosa.
"""

from __future__ import annotations

import numpy as np

_F_SP = 200.0 / 3  # Slaney scale: linear below 1 kHz, 66.67 Hz per mel
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel(freqs: np.ndarray) -> np.ndarray:
    freqs = np.asanyarray(freqs, dtype=np.float64)
    mels = freqs / _F_SP
    log_t = freqs >= _MIN_LOG_HZ
    mels = np.where(log_t, _MIN_LOG_MEL + np.log(np.maximum(freqs, 1e-10) / _MIN_LOG_HZ) / _LOGSTEP, mels)
    return mels


def mel_to_hz(mels: np.ndarray) -> np.ndarray:
    mels = np.asanyarray(mels, dtype=np.float64)
    freqs = _F_SP * mels
    log_t = mels >= _MIN_LOG_MEL
    return np.where(log_t, _MIN_LOG_HZ * np.exp(_LOGSTEP * (mels - _MIN_LOG_MEL)), freqs)


def mel_filters(sample_rate: int = 16000, n_fft: int = 400, n_mels: int = 80) -> np.ndarray:
    """Return the ``(n_mels, 1 + n_fft // 2)`` float32 filterbank."""
    n_bins = 1 + n_fft // 2
    fft_freqs = np.linspace(0.0, sample_rate / 2.0, n_bins)
    mel_points = mel_to_hz(np.linspace(hz_to_mel(np.array(0.0)), hz_to_mel(np.array(sample_rate / 2.0)), n_mels + 2))
    fdiff = np.diff(mel_points)
    ramps = mel_points[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    enorm = 2.0 / (mel_points[2 : n_mels + 2] - mel_points[:n_mels])
    weights *= enorm[:, None]
    return weights.astype(np.float32)
