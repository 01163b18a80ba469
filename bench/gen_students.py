#!/usr/bin/env python3
"""Writes N valid student rows for one primary school as an import CSV (UTF-8 with BOM).

Each row has a valid resident ID number (GB 11643 check character) whose birth date and sex
agree with the row, a grade that fits the age on the reference date, and a guardian mobile.
Usage: gen_students.py N OUT.csv [REFERENCE-DATE]
"""
import datetime
import sys

WEIGHTS = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
CHECK = "10X98765432"
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂"
# County-level codes of 深圳 in use: the ID's region prefix must be a known code.
REGIONS = ["440303", "440304", "440305", "440306", "440307", "440308", "440309", "440310"]


def check_char(body):
    return CHECK[sum(int(c) * w for c, w in zip(body, WEIGHTS)) % 11]


def main():
    n = int(sys.argv[1])
    out = sys.argv[2]
    ref = datetime.date.fromisoformat(sys.argv[3]) if len(sys.argv) > 3 else datetime.date.today()
    written = 0
    with open(out, "w", encoding="utf-8-sig", newline="") as f:
        f.write("姓名,性别,出生日期,民族,身份证号,年级,监护人,与学生关系,监护人电话\r\n")
        # Grade g is about g + 5 years old: born in the year that makes them so by 1 September.
        for region in REGIONS:
            for grade in range(1, 7):
                year = ref.year - grade - 5 - (0 if ref.month >= 9 else 1)
                day = datetime.date(year, 1, 1)
                while day.year == year:
                    for seq in range(1000):
                        if written == n:
                            return
                        body = f"{region}{day:%Y%m%d}{seq:03d}"
                        idn = body + check_char(body)
                        sex = "男" if seq % 2 else "女"
                        name = SURNAMES[written % 20] + GIVEN[(written // 20) % 20] + GIVEN[(written // 400) % 20]
                        phone = f"138{written % 100000000:08d}"
                        f.write(f"{name},{sex},{day:%Y-%m-%d},汉族,{idn},{grade},{SURNAMES[written % 20]}某,母亲,{phone}\r\n")
                        written += 1
                    day += datetime.timedelta(days=1)
    if written < n:
        sys.exit(f"only {written} distinct rows possible")


if __name__ == "__main__":
    main()
