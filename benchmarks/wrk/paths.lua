-- wrk script: round-robin over the paths given after "--".
local paths = {}
local turn = 0

function init(args)
  for i = 1, #args do
    paths[#paths + 1] = args[i]
  end
  if #paths == 0 then
    paths[1] = wrk.path
  end
end

function request()
  turn = turn % #paths + 1
  return wrk.format(nil, paths[turn])
end
