# English. Every key of zh-CN.ftl must be here too (a test checks).
app-name = Santong
app-tagline = Education informatization public service platform
lang-name = English
nav-home = Home
nav-regions = Regions
nav-api = API documentation
nav-language = Language
skip-to-content = Skip to content
footer-note = Santong · self-hosted education informatization platform · region codes per GB/T 2260 (2024)

home-title = Welcome to Santong
home-intro = Santong puts the "three connections and two platforms" on one server: education management information, unified sign-on, education resources, learning spaces and decision support.
home-regions-title = Regions
home-regions-body = Browse all { $count } administrative divisions at county level and above, with their hierarchy and the history of code changes.
home-regions-link = Browse regions
home-demo-title = Demo county
home-demo-body = Demo data is ready: { $name } ({ $code }).
home-demo-link = Open the demo county
home-api-title = Open API
home-api-body = All data is available through a JSON API described in OpenAPI 3.1.
home-api-link = View the OpenAPI document

regions-title = Regions
regions-nation = China
regions-search-label = Find by name or code
regions-search-button = Find
regions-search-results = Results for "{ $q }": { $count ->
    [one] one region
   *[other] { $count } regions
}
regions-none = No region matches.
regions-no-children = No subdivisions.
regions-col-code = Code
regions-col-name = Name
regions-col-level = Level
regions-col-parent = Parent
regions-col-children = Subdivisions
regions-level-province = Province
regions-level-prefecture = Prefecture
regions-level-county = County
regions-children = Subdivisions
regions-breadcrumb = You are here
regions-code = Code
regions-level = Level
regions-retired-title = Retired code
regions-retired-body = Code { $code } ({ $name }) is no longer in the current list.
regions-successor = Succeeded by { $name } ({ $code }) as of the { $year } code list.
regions-no-successor = No successor is recorded for this code.
regions-history = Code history
regions-history-years = { $start }–{ $end }
regions-history-years-open = { $start } to date
regions-status-current = In use
regions-status-retired = Abolished
regions-status-changed = Changed
regions-sort-by = Sort

pager-summary = Page { $page } of { $pages }, { $total } in all
pager-prev = Previous
pager-next = Next

error-title = Something went wrong
error-back-home = Back to the home page
error-not-found = The page you asked for does not exist.
error-region-not-found = There is no region with code { $code }.
error-bad-request = Some parameters of the request are not valid; please check them.
error-invalid-region-code = "{ $value }" is not a valid region code (six digits expected).
error-payload-too-large = The request is too large: the limit is { $limit }.
error-method-not-allowed = This address does not support that method.
error-timeout = The request took too long; please try again later.
error-unavailable = The service is temporarily unavailable; please try again later.
error-internal = Internal server error; it has been logged. Please try again, and if it persists give the request id to your administrator.
error-request-id = Request id: { $id }

field-error-not-a-number = Parameter { $field } must be a number.
field-error-out-of-range = Parameter { $field } is out of range.
field-error-unknown-sort-field = Parameter { $field } is not a field you can sort by.
field-error-invalid-value = Parameter { $field } has an invalid value.
field-error-too-long = Parameter { $field } is too long.

status-400 = Bad request
status-401 = Sign-in required
status-403 = Forbidden
status-404 = Not found
status-405 = Method not allowed
status-408 = Request timeout
status-409 = Conflict
status-413 = Content too large
status-429 = Too many requests
status-500 = Server error
status-503 = Service unavailable
regions-col-years = Years in use
regions-col-status = Status
