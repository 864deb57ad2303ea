"use strict";
(function () {
  const table = document.getElementById("per-image");
  if (!table) return;
  const body = table.tBodies[0];
  const headers = Array.from(table.tHead.rows[0].cells);
  headers.forEach(function (header, column) {
    if (!header.dataset.sort) return;
    header.addEventListener("click", function () {
      const ascending = !header.classList.contains("sorted-asc");
      headers.forEach(function (other) { other.classList.remove("sorted-asc", "sorted-desc"); });
      header.classList.add(ascending ? "sorted-asc" : "sorted-desc");
      const numeric = header.dataset.sort === "number";
      const key = function (row) {
        const raw = row.cells[column].dataset.value;
        return numeric ? (raw === "" ? NaN : Number(raw)) : raw;
      };
      const rows = Array.from(body.rows);
      rows.sort(function (a, b) {
        const x = key(a), y = key(b);
        if (numeric) {
          if (Number.isNaN(x) || Number.isNaN(y)) return Number.isNaN(x) - Number.isNaN(y);  // undefined last
          return ascending ? x - y : y - x;
        }
        return ascending ? x.localeCompare(y) : y.localeCompare(x);
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
})();
