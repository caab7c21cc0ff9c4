-- wrk script: every request a POST of N bytes, N the script's argument
-- (wrk -s wrk_post.lua URL -- N). Set in init, which runs before wrk builds
-- its one static request, so the body is made once, not per request.
function init(args)
  wrk.method = "POST"
  wrk.body = string.rep("x", tonumber(args[1]))
  wrk.headers["Content-Type"] = "application/octet-stream"
end
