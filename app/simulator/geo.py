"""Where simulated transactions happen on the map.

The Handbook simulator puts customers and terminals on a 100 x 100 plane. We map that plane
linearly onto a box over western and central Europe (so r = 5 plane units is about 120-130 km),
give each point the country whose centroid is nearest, and keep a list of far-away cities for
the cross-border fraud scenarios. Country and currency codes are ISO 3166-1 alpha-2 / ISO 4217.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy.spatial import cKDTree

LAT_MIN, LAT_MAX = 36.0, 60.0
LON_MIN, LON_MAX = -9.0, 24.0
PLANE = 100.0

# country: (centroid lat, centroid lon, currency)
HOME_COUNTRIES: dict[str, tuple[float, float, str]] = {
    "PT": (39.6, -8.0, "EUR"),
    "ES": (40.2, -3.6, "EUR"),
    "FR": (46.6, 2.4, "EUR"),
    "BE": (50.6, 4.6, "EUR"),
    "NL": (52.2, 5.5, "EUR"),
    "LU": (49.8, 6.1, "EUR"),
    "DE": (51.0, 10.4, "EUR"),
    "CH": (46.8, 8.2, "CHF"),
    "AT": (47.6, 14.1, "EUR"),
    "IT": (42.8, 12.5, "EUR"),
    "GB": (52.8, -1.6, "GBP"),
    "IE": (53.2, -8.0, "EUR"),
    "DK": (56.0, 9.5, "DKK"),
    "NO": (59.9, 10.7, "NOK"),
    "SE": (58.8, 15.0, "SEK"),
    "PL": (52.1, 19.4, "PLN"),
    "CZ": (49.8, 15.5, "CZK"),
    "SK": (48.7, 19.7, "EUR"),
    "HU": (47.2, 19.4, "HUF"),
    "SI": (46.1, 14.8, "EUR"),
    "HR": (45.1, 15.2, "EUR"),
    "BA": (44.2, 17.8, "BAM"),
    "RS": (44.0, 20.9, "RSD"),
}

# Far-away cities for impossible travel and account takeover: (country, lat, lon, currency).
FOREIGN_CITIES: tuple[tuple[str, float, float, str], ...] = (
    ("US", 40.71, -74.01, "USD"),
    ("BR", -23.55, -46.63, "BRL"),
    ("NG", 6.52, 3.38, "NGN"),
    ("IN", 19.08, 72.88, "INR"),
    ("PH", 14.60, 120.98, "PHP"),
    ("TH", 13.76, 100.50, "THB"),
    ("ID", -6.21, 106.85, "IDR"),
    ("MX", 19.43, -99.13, "MXN"),
    ("AE", 25.20, 55.27, "AED"),
    ("VN", 10.82, 106.63, "VND"),
)

_CODES = np.array(list(HOME_COUNTRIES))
_CURRENCIES = np.array([c for _, _, c in HOME_COUNTRIES.values()])
_TREE = cKDTree(np.array([(lat, lon) for lat, lon, _ in HOME_COUNTRIES.values()]))


def plane_to_latlon(
    x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    lat = LAT_MIN + y / PLANE * (LAT_MAX - LAT_MIN)
    lon = LON_MIN + x / PLANE * (LON_MAX - LON_MIN)
    return lat, lon


def country_of(
    lat: npt.NDArray[np.float64], lon: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.str_], npt.NDArray[np.str_]]:
    """Nearest-centroid country and its currency for points inside the home box."""
    _, idx = _TREE.query(np.column_stack([lat, lon]))
    return _CODES[idx], _CURRENCIES[idx]
